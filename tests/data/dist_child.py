"""Run by test_distributed.py under ``torchrun --nproc_per_node 2``: each rank streams its share.

    torchrun --nproc_per_node 2 dist_child.py STORE_URL OUT_DIR

Uses accelerate as a training script would (gloo on the CPU): the loader goes through
``Accelerator.prepare`` and must come back unchanged (not sharded again). Writes
``OUT_DIR/rank<r>.json`` with the sample ids, the batch count and the topology the dataset saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator

import benchkit as bench
from benchkit.data.loader import StreamingDataLoader


def main(url: str, out_dir: str) -> None:
    acc = Accelerator(cpu=True)
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    ds = bench.open_dataset(
        "toy", store=url, shuffle=True, seed=21
    )  # rank/world from torch.distributed
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    prepared = acc.prepare(loader)
    got: list[int] = []
    batches = 0
    for b in prepared:
        got.extend(int(x) for x in b[0])
        batches += 1
        # a collective per step, as DDP does: it would hang if ranks had different batch counts
        t = torch.tensor([1])
        dist.all_reduce(t)
        assert int(t) == acc.num_processes
    result = {
        "rank": acc.process_index,
        "topology": list(ds.topology()),
        "prepared_is_loader": prepared is loader,
        "len": len(ds),
        "batches": batches,
        "ids": got,
    }
    Path(out_dir, f"rank{acc.process_index}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
