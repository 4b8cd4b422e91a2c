# syntax=docker/dockerfile:1
# One image for both sidecars: the container's command picks the service
#   authz-service ...       (the default CMD)
#   ratelimit-service ...
# Build the image docker-compose.yml, deploy/k8s and the Helm chart name:
#   docker build -t tollgate:0.1.0 .          (or: docker compose build)
# The base is pinned by tag only: no digest for it could be verified where this was
# written. Add one where your registry policy asks for it
# (--build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<the index digest>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: a virtualenv with the project and its dependencies (wheels only) ---
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY tollgate ./tollgate
COPY tollgate_cli ./tollgate_cli
COPY authz_service ./authz_service
COPY ratelimit_service ./ratelimit_service
COPY --chmod=0755 scripts/reinstall-otel-proto.sh /usr/local/bin/reinstall-otel-proto
# The project, then opentelemetry-proto written again: the same step as the venv's
# (scripts/reinstall-otel-proto.sh says why).
RUN pip install --no-cache-dir . \
 && reinstall-otel-proto python \
 && python -c "import authz_service.cli, ratelimit_service.cli"

# --- runtime: the slim base, the venv, a numeric non-root user, nothing else ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Envoy ext_authz (HTTP and gRPC) and rate-limit sidecars" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric UID/GID so Kubernetes' runAsNonRoot can verify them without /etc/passwd.
RUN groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tollgate \
 && install -d -o 10001 -g 10001 -m 0770 /var/run/tollgate
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/grpc_health_check.py /usr/local/bin/tollgate-grpc-health
COPY --chmod=0755 deploy/docker/http_health_check.py /usr/local/bin/tollgate-http-health
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# No HEALTHCHECK: which door a container serves is its command's choice. Orchestrators
# probe it with `tollgate-http-health ADDRESS /ready` (the HTTP door) or
# `tollgate-grpc-health ADDRESS` (grpc.health.v1); both work on unix: sockets too.
# Compose `healthcheck:` and Kubernetes exec probes do, see docs/deploy.md.
USER 10001:10001
WORKDIR /var/run/tollgate
# authz gRPC, authz HTTP door, ratelimit gRPC, authz metrics, ratelimit metrics (the
# service ports are used only when a service binds TCP; the pod uses unix sockets).
EXPOSE 9191 9192 8081 9464 9465
STOPSIGNAL SIGTERM
CMD ["authz-service"]
