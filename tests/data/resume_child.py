"""Run by test_resume.py in a fresh process: load a saved streaming state and stream the rest.

    python resume_child.py STORE_URL STATE_FILE OUT_FILE WORKERS BATCH [RANK WORLD]

WORKERS < 0 iterates the dataset itself; otherwise a StreamingDataLoader with that many workers.
Writes the sample ids it yields, as JSON, to OUT_FILE.
"""

from __future__ import annotations

import json
import sys

import torch

import benchkit as bench
from benchkit.data.loader import StreamingDataLoader


def main(argv: list[str]) -> None:
    url, state_file, out_file, workers, batch = argv[:5]
    workers, batch = int(workers), int(batch)
    rank, world = (int(argv[5]), int(argv[6])) if len(argv) > 6 else (0, 1)
    state = torch.load(state_file, weights_only=True)
    ds = bench.open_dataset("toy", store=url, rank=rank, world_size=world)
    if workers < 0:
        ds.load_state_dict(state)
        ds.set_epoch(state["epoch"])  # what a training loop does: same epoch keeps the position
        got = [s[0] for s in ds]
    else:
        loader = StreamingDataLoader(ds, batch_size=batch, num_workers=workers)
        loader.load_state_dict(state)
        loader.set_epoch(state["epoch"])
        got = [int(x) for b in loader for x in b[0]]
    with open(out_file, "w") as f:
        json.dump(got, f)


if __name__ == "__main__":
    main(sys.argv[1:])
