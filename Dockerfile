# syntax=docker/dockerfile:1
# One image for both sidecars: `authz-service` (default) or `ratelimit-service`.
# Stage 1 builds a virtualenv with the project and its runtime dependencies only;
# stage 2 copies it onto a slim base and runs as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/tollgate
COPY pyproject.toml README.md ./
COPY tollgate ./tollgate
COPY authz_service ./authz_service
COPY ratelimit_service ./ratelimit_service
RUN /opt/tollgate/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Envoy ext_authz and rate-limit sidecars" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid tollgate --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/tollgate /opt/tollgate
ENV PATH=/opt/tollgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# gRPC: authz 9191, ratelimit 8081 (when not on a Unix socket).
EXPOSE 9191 8081
# Liveness is gRPC health (grpc.health.v1), probed by the orchestrator: see
# docker-compose.yml and deploy/k8s/.
CMD ["authz-service"]
