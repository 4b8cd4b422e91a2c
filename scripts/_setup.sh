# Shared setup steps for scripts/test and scripts/up (sourced, not run).

ensure_debian_packages() {
  # Each argument is COMMAND:PACKAGE; install the packages whose command is missing.
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing Debian packages: ${missing[*]} (apt-get, about a minute)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "   done"
}

pip_progress() {
  # pip's output, one short line per package it fetches or installs: the first install
  # takes half a minute and must not look like a hang. Errors pass through whole.
  local line n=0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      Collecting*|"Obtaining "*)
        n=$((n + 1))
        printf '   [%3d] %s\n' "$n" "${line#* }" ;;
      "Installing collected packages"*)
        echo "   installing $n packages..." ;;
      "Successfully installed"*)
        echo "   installed" ;;
      ERROR:*)
        echo "$line" ;;
    esac
  done
}

ensure_venv() {
  local stamp=.venv/.tollgate-installed
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  # Reinstall when pyproject.toml changed since the last install.
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing Python packages into .venv (about 30 s the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    local log=.venv/pip-install.log
    if ! .venv/bin/python -m pip install --progress-bar off -e '.[dev]' 2>&1 \
        | tee "$log" | pip_progress; then
      echo "== pip install failed (its whole output: $log):" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    scripts/reinstall-otel-proto.sh .venv/bin/python
    touch "$stamp"
  fi
}
