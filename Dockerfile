# One image for the three loginpipe services. The chart runs it as `loginpipe generate`,
# `loginpipe consume` or `loginpipe aggregate` (the Deployment passes the subcommand as args).
#
# Base: the official python:3.11-slim-bookworm image (Python 3.11.16), pinned by the digest of
# its multi-platform index, the same in both stages so the venv's interpreter symlink
# (/opt/venv/bin/python -> /usr/local/bin/python3.11) resolves in the final stage.
# Digest from docker-library/repo-info, repos/python/remote/3.11-slim-bookworm.md. To move it:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (then update PYTHON_IMAGE below,
#   the version table in README.md, and run tests/e2e/test_dev_loop_files.py)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# ---- builder: the locked dependencies and the package, in a venv -------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# A venv without pip of its own: the base image's pip installs into it (`pip --python`), so
# the copied venv holds only the application and its locked dependencies.
RUN python -m venv --without-pip /opt/venv

# Dependencies first (their layer survives code changes): exactly the locked versions, every
# file checked against its hash, wheels only (confluent-kafka and orjson ship manylinux wheels,
# so no compiler is needed).
COPY requirements.lock ./
RUN pip --python /opt/venv/bin/python install \
        --require-hashes --no-deps --only-binary=:all: -r requirements.lock

# The package itself, without dependencies. The wheel is built with the setuptools and wheel
# that the pinned base image already carries (no build isolation: nothing unpinned is fetched).
COPY pyproject.toml README.md ./
COPY services/ ./services/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && pip --python /opt/venv/bin/python install --no-deps /tmp/dist/loginpipe-*.whl \
    && /opt/venv/bin/python -c "import loginpipe.cli; from loginpipe import schemas; [schemas.load(n) for n in schemas.VERSIONS]"

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="loginpipe" \
      org.opencontainers.image.description="Real-time login-event pipeline on Kafka and Redis: generate, validate and route, aggregate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b"

# Nothing is written at runtime: no bytecode (the venv's .pyc files are compiled at build time),
# unbuffered logs to stderr. Works with readOnlyRootFilesystem.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The runtime needs no installer: drop the base image's pip, setuptools and wheel.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel

COPY --from=builder /opt/venv /opt/venv

# Numeric UID:GID so Kubernetes can verify runAsNonRoot without an /etc/passwd entry.
USER 10001:10001

# Metrics, /healthz and /readyz: generator 9101, consumer 9102, aggregator 9103.
EXPOSE 9101 9102 9103

ENTRYPOINT ["loginpipe"]
CMD ["--help"]
