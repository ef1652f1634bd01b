#!/usr/bin/env python
"""Per-call cost of logging a value during training (BenchKit's tracker).

    BENCHKIT_HOME=$(mktemp -d) .venv/bin/python benchmarks/tracker_log.py [--calls 100000]

Measures, for N calls each: ``BenchTracker.log`` with three floats, ``accelerator.log`` (what
``acc.log`` in a classic script costs), and ``run.log`` with a CPU scalar tensor (what
``run.log({"loss": loss})`` costs in a ``@bench.train`` loop), plus the time ``finish()``
takes to write everything to the store. Logging only appends to a buffer; background threads
journal it on local disk and send it to the store, so the store's speed does not enter the
per-call cost. The CPU figure is the process's CPU time (every thread, ``finish()``
included) per logged event: what logging costs in all, independent of how busy the machine is.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=100_000)
    args = p.parse_args()
    n = args.calls

    import benchkit as bench
    from benchkit.training.tracker import BenchTracker

    store = tempfile.mkdtemp(prefix="bench-tracker-")
    tracker = BenchTracker("bench", store=store)
    tracker.start()
    cpu0 = time.process_time()
    t = per_call(lambda i: tracker.log({"loss": 0.5, "acc": 0.25, "lr": 1e-3}, step=i), n)
    t0 = time.perf_counter()
    tracker.finish()
    fin = time.perf_counter() - t0
    cpu = (time.process_time() - cpu0) / n
    print(
        f"BenchTracker.log, 3 floats:        {t * 1e6:6.2f} us/call  (finish: {fin * 1e3:.0f} ms; "
        f"CPU of all threads, finish included: {cpu * 1e6:.1f} us per event)"
    )

    with bench.Run({"epochs": 1}, name="bench", store=store, cpu=True) as run:
        acc = run.accelerator
        t_acc = per_call(lambda i: acc.log({"loss": 0.5}, step=i), n)
        loss = torch.tensor(0.5)
        t_run = per_call(lambda i: run.log({"loss": loss}), n)
        t0 = time.perf_counter()
    fin = time.perf_counter() - t0
    print(f"accelerator.log, 1 float:          {t_acc * 1e6:6.2f} us/call")
    print(
        f"run.log, 1 CPU scalar tensor:      {t_run * 1e6:6.2f} us/call  (end of run incl. finish: {fin * 1e3:.0f} ms)"
    )
    print(f"({n} calls each; torch {torch.__version__})")


if __name__ == "__main__":
    main()
