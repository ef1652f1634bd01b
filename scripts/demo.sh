#!/usr/bin/env bash
# Install everything and run the main job end to end on the embedded local store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export BENCHKIT_HOME="${BENCHKIT_HOME:-$PWD/.benchkit}"
.venv/bin/python -m benchkit --version
.venv/bin/python - <<'PY'
import benchkit as bench
store = bench.open_store()
store.put("demo/hello.txt", b"hello from benchkit")
assert store.get("demo/hello.txt") == b"hello from benchkit"
print("store round trip OK:", store.url, store.list("demo/"))
store.delete_prefix("demo/")
PY
