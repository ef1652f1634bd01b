#!/usr/bin/env bash
# Install everything and run the main job end to end on the embedded local store:
# draw the cat/dog images, migrate them (chunk, stream-test, upload), train a small CNN for a few
# epochs on the CPU, then show the run and its checkpoints.
# BENCHKIT_HOME defaults to ./.benchkit so the demo leaves your real settings alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export BENCHKIT_HOME="${BENCHKIT_HOME:-$PWD/.benchkit}"
bk() { .venv/bin/python -m benchkit "$@"; }

bk --version
bk config
.venv/bin/python examples/catdog/make_data.py
bk migrate data examples/catdog/train.py --yes
bk datasets list
bk run examples/catdog/train.py --name catdog-demo
bk runs list
run_id=$(bk runs list --json | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
bk runs show "$run_id"
bk checkpoints list --run "$run_id"
