"""Run by test_mix.py under ``torchrun --nproc_per_node 2``: each rank streams its share of a mix
through 2 workers, stops after a few batches, saves the loader's state, and a fresh loader of
a fresh mix resumes from it. Writes ``OUT_DIR/rank<r>.json`` with both halves and the state.

    torchrun --nproc_per_node 2 mix_child.py STORE_URL OUT_DIR
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

WEIGHTS = {"a": 0.7, "b": 0.3}


def ids(batches) -> list[int]:
    return [int(x) for b in batches for x in b[0]]


def main(url: str, out_dir: str) -> None:
    acc = Accelerator(cpu=True)
    mix = bench.mix(
        WEIGHTS, url, shuffle=True, seed=21, drop_last=True
    )  # rank from torch.distributed
    loader = acc.prepare(StreamingDataLoader(mix, batch_size=4, num_workers=2))
    it = iter(loader)
    head = ids(next(it) for _ in range(5))
    state = loader.state_dict()
    del it
    t = torch.tensor([len(head)])
    dist.all_reduce(t)  # both ranks stopped after the same number of batches
    fresh = StreamingDataLoader(
        bench.mix(WEIGHTS, url, shuffle=True, seed=21, drop_last=True), batch_size=4, num_workers=2
    )
    fresh.load_state_dict(json.loads(json.dumps(state)))
    rest = ids(fresh)
    result = {"head": head, "rest": rest, "state": state}
    Path(out_dir, f"rank{acc.process_index}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
