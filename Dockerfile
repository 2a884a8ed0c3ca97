# The Trireme operator image: `trireme run` (kopf underneath) on a slim Python base.
# Two stages: the builder turns the project and its dependencies into wheels and installs
# them into a virtualenv; the final stage gets only that virtualenv, with no pip, compiler
# or sources, and runs as a non-root user (65532) on a read-only root filesystem.
#
#   docker build -t trireme:0.1.0 .

# The project's version (pyproject.toml); a test keeps the two equal.
ARG VERSION=0.1.0

FROM python:3.11-slim-bookworm AS builder
ARG VERSION

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# What the wheel is built from (pyproject.toml's package-dir); .dockerignore keeps the rest out.
COPY pyproject.toml README.md ./
COPY trireme/ trireme/
COPY operator/ operator/
COPY scheduler/ scheduler/
COPY devcluster/ devcluster/
COPY benchmarks/ benchmarks/

# Wheels first (the project and every dependency), then an install from those wheels only,
# into a virtualenv without pip: the final image has nothing to install packages with.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/trireme \
 && pip --python /opt/trireme/bin/python install --no-cache-dir --no-index --find-links /wheels "trireme==${VERSION}" \
 && /opt/trireme/bin/trireme --help > /dev/null

FROM python:3.11-slim-bookworm
ARG VERSION

LABEL org.opencontainers.image.title="trireme" \
      org.opencontainers.image.description="Kubernetes operator that places, scales and rebalances NVIDIA Triton Inference Server fleets on GPU clusters" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# HOME on the writable /tmp: the root filesystem is read-only in the cluster.
ENV PATH=/opt/trireme/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

# The base image's own installers are not needed at run time.
RUN python -m pip uninstall --yes pip setuptools wheel

COPY --from=builder /opt/trireme /opt/trireme

USER 65532:65532
# /metrics (the operator's own Prometheus metrics) and /healthz, /readyz (probes), as the chart sets them.
EXPOSE 9090 8081
ENTRYPOINT ["trireme"]
CMD ["run"]
