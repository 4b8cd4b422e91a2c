# syntax=docker/dockerfile:1
# One image for both sidecars: the container's command picks the service
#   authz-service ...       (the default CMD)
#   ratelimit-service ...
# Build: docker build -t tollgate:0.1.0 .
# Pin the base image by digest too where your registry policy asks for it
# (python:3.11.14-slim-bookworm@sha256:...); the tag alone is pinned here.
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
COPY authz_service ./authz_service
COPY ratelimit_service ./ratelimit_service
# xds-protos bundles an older copy of opentelemetry/proto; whichever package pip writes
# last wins and the OTLP exporter needs the newer one, so write opentelemetry-proto
# again (same version, no dependencies) after the project (see scripts/_setup.sh).
RUN pip install --no-cache-dir . \
 && version="$(pip show opentelemetry-proto | awk '/^Version:/ {print $2}')" \
 && test -n "$version" \
 && pip install --no-cache-dir --force-reinstall --no-deps "opentelemetry-proto==${version}" \
 && python -c "import opentelemetry.exporter.otlp.proto.grpc.trace_exporter, authz_service.cli, ratelimit_service.cli"

# --- runtime: the slim base, the venv, a numeric non-root user, nothing else ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Envoy ext_authz and rate-limit gRPC sidecars" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric UID/GID so Kubernetes' runAsNonRoot can verify them without /etc/passwd.
RUN groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tollgate \
 && install -d -o 10001 -g 10001 -m 0770 /var/run/tollgate
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/grpc_health_check.py /usr/local/bin/tollgate-grpc-health
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# No HEALTHCHECK: the services speak gRPC only. Orchestrators probe them with
# `tollgate-grpc-health ADDRESS` (grpc.health.v1, works on unix: sockets too):
# Compose `healthcheck:` and Kubernetes exec probes do, see docs/deploy.md.
USER 10001:10001
WORKDIR /var/run/tollgate
# authz gRPC, ratelimit gRPC, authz metrics, ratelimit metrics (the gRPC ports are
# used only when a service binds TCP; the sidecar setup uses unix sockets).
EXPOSE 9191 8081 9464 9465
STOPSIGNAL SIGTERM
CMD ["authz-service"]
