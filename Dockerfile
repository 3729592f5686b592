# syntax=docker/dockerfile:1
# The functions' image: every API area (JAN_FUNCTION picks one per Knative Service), built
# from uv.lock, so it runs exactly the versions `make env` and CI test.
#
#   docker build -t ghcr.io/janhq/jan-server:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Neither the dev nor the local extra: no test tools, and no embedded PostgreSQL (a pod
# that scales to zero would lose its data), so DB_POSTGRESQL_WRITE_DSN is required.
# Runs as a non-root user on a read-only root filesystem (manifests/base/function).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build

RUN python -m pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /src
# The dependencies first: this layer changes only with the lock.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project --no-editable
COPY function/ function/
COPY functions/ functions/
COPY migrations/ migrations/
RUN uv sync --locked --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="jan-server" \
      org.opencontainers.image.description="Jan Server functions: self-hosted OpenAI-compatible API areas on Knative" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/janhq/jan-server" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    JAN_COMMIT=${REVISION}

USER 1000:1000
EXPOSE 8080
# `jan-server serve` runs the function on hypercorn through func-python, as Knative
# Functions' own image does; `jan-server migrate apply` is the migration Job's command.
ENTRYPOINT ["jan-server"]
CMD ["serve"]
