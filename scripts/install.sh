#!/usr/bin/env bash
# Create .venv (if needed) and install BenchKit with its test dependencies into it.
# torch and torchvision are pinned to the releases this machine has on disk; any other pin
# would download several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stamp=.venv/.benchkit-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -z "${BENCHKIT_REINSTALL:-}" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -U pip wheel
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[dev]'
touch "$stamp"
