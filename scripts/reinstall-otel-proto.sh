#!/bin/sh
# Write opentelemetry-proto again, after everything else: xds-protos ships its own,
# older copy of opentelemetry/proto/*, and whichever of it and opentelemetry-proto pip
# writes last wins. The OTLP exporter needs the newer one (a superset, so Envoy's
# protos keep working). The one place this step lives: scripts/_setup.sh (the venv)
# and the Dockerfile (the image) both run this file.
#   scripts/reinstall-otel-proto.sh PYTHON
set -eu
python="${1:?usage: $0 PYTHON}"
version=$("$python" -m pip show opentelemetry-proto 2>/dev/null | awk '/^Version:/ {print $2}')
if [ -z "$version" ]; then
  echo "reinstall-otel-proto: opentelemetry-proto is not installed for $python" >&2
  exit 1
fi
"$python" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
  "opentelemetry-proto==$version"
"$python" -c "import opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
