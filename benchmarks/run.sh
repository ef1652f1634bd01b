#!/usr/bin/env bash
# Run every benchmark, one after the other, then write the report.
#
#   bash benchmarks/run.sh            # full setting: 10,000 images (~1 GB), 3 repeats (~1 hour on 2 cores)
#   bash benchmarks/run.sh --quick    # 1,000 images (~100 MB), 1 repeat (a few minutes)
#   BENCH_REPEATS=2 bash benchmarks/run.sh   # the full setting with another number of repeats
#
# Creates benchmarks/.venv on first use (its own environment, so the peer libraries'
# dependencies never touch the project's), with BenchKit installed editable from this checkout.
# The full setting rewrites the results part of docs/BENCHMARKS.md and its chart.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=()
if [[ "${1:-}" == "--quick" ]]; then QUICK=(--quick); fi
REP=()
if [[ -n "${BENCH_REPEATS:-}" ]]; then REP=(--repeats "$BENCH_REPEATS"); fi

VENV=benchmarks/.venv
PY=$VENV/bin/python
if [[ ! -x $PY ]] || ! $PY -c "import litdata, streaming, webdataset, matplotlib, moto, benchkit, fastapi, psutil" 2>/dev/null; then
    echo "setting up $VENV" >&2
    python3 -m venv "$VENV"
    # these torch pins match the project's environment (and install from local wheels here)
    $VENV/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
    $VENV/bin/pip install -q -e ".[server]"   # the server extra: stream.py's fourth store
    $VENV/bin/pip install -q -r benchmarks/requirements.txt
fi

set -x
$PY benchmarks/make_data.py "${QUICK[@]}"
$PY benchmarks/convert.py "${QUICK[@]}" "${REP[@]}"
$PY benchmarks/stream.py "${QUICK[@]}" "${REP[@]}"
$PY benchmarks/limit.py "${QUICK[@]}" "${REP[@]}"
$PY benchmarks/resume.py "${QUICK[@]}" "${REP[@]}"
$PY benchmarks/first_batch.py "${QUICK[@]}" "${REP[@]}"
$PY benchmarks/train_overhead.py "${QUICK[@]}" "${REP[@]}"
if [[ ${#QUICK[@]} -eq 0 ]]; then
    $PY benchmarks/report.py --write-doc
else
    $PY benchmarks/report.py --quick
fi
