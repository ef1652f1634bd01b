"""A real two-process run: ``torchrun --nproc_per_node 2`` (gloo, CPU), each rank streaming its share
through a DataLoader with 2 workers after ``Accelerator.prepare``; the union is exactly-once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from streamkit import N_SAMPLES, make_dataset

CHILD = Path(__file__).with_name("dist_child.py")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_torchrun_two_ranks_stream_exactly_once(tmp_path):
    url = str(tmp_path / "store")
    make_dataset(url, tmp_path, n=N_SAMPLES + 1)  # 104 samples: divides by 2 ranks
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(CHILD),
            url,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, res in enumerate(ranks):
        assert res["topology"] == [r, 2]
        assert res["prepared_is_loader"], "accelerate re-wrapped the loader"
        assert res["len"] == 52 and len(res["ids"]) == 52 and res["batches"] == 13
    union = Counter(ranks[0]["ids"] + ranks[1]["ids"])
    assert set(union) == set(range(N_SAMPLES + 1)) and all(v == 1 for v in union.values())
    assert ranks[0]["ids"] != sorted(ranks[0]["ids"])  # shuffled
