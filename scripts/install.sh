#!/usr/bin/env bash
# Create .venv (if needed) and install BenchKit with its test dependencies into it, plus the
# system packages the tests drive for real (PostgreSQL, Chromium and its driver) when they are
# missing and this user may install them.
# torch and torchvision are pinned to the releases this machine has on disk; any other pin
# would download several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
quiet() { grep -v "WARNING: Location 'file:" || true; }

system_packages() {
  local missing=()
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: ${missing[*]} not installed (needs apt-get as root); tests that drive them will skip outside CI" >&2
    return 0
  fi
  echo "installing system packages: ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_packages() {
  local stamp=.venv/.benchkit-installed
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -z "${BENCHKIT_REINSTALL:-}" ]; then
    return 0
  fi
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q -U pip wheel 2>&1 | quiet
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | quiet
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | quiet
  touch "$stamp"
}

# the two at once: apt-get and pip each spend most of their time waiting on downloads
system_packages &
apt_pid=$!
python_packages
wait "$apt_pid" || { echo "installing the system packages failed (see above)" >&2; exit 1; }
