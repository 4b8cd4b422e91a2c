# Shared setup steps for scripts/test and scripts/up (sourced, not run).

ensure_debian_packages() {
  # Each argument is COMMAND:PACKAGE; install the packages whose command is missing.
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_venv() {
  local stamp=.venv/.tollgate-installed
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  # Reinstall when pyproject.toml changed since the last install.
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing Python packages"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    reinstall_otel_protos
    touch "$stamp"
  fi
}

reinstall_otel_protos() {
  # xds-protos ships its own, older copy of opentelemetry/proto/*, and whichever of
  # it and opentelemetry-proto pip writes last wins. The OTLP exporter needs the
  # newer one (a superset, so Envoy's protos keep working): write it last.
  local version
  version=$(.venv/bin/python -m pip show opentelemetry-proto 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] && .venv/bin/python -m pip install -q --force-reinstall --no-deps \
    "opentelemetry-proto==$version"
  return 0
}
