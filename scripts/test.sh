#!/usr/bin/env bash
# Install everything and run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
# in parallel: BENCHKIT_TEST_WORKERS processes (0: in this one); the tests that share a Ray head
# or a browser run on one worker (tests/conftest.py)
.venv/bin/python -m pytest -n "${BENCHKIT_TEST_WORKERS:-2}" --dist loadgroup "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
