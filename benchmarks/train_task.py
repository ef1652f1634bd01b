"""The training job both sides of the overhead benchmark run: a small CNN on in-memory data.

``python -m benchkit run benchmarks/train_task.py`` runs :func:`train` (BenchKit's runner: run
record, tracker, progress bar, ``run.log`` every step); ``python benchmarks/train_task.py``
runs :func:`plain` (the same loop written with plain Accelerate). Both write the time of every
step to the JSON file named by ``BENCH_STEP_TIMES``. The data is in memory so the figure is the
runner's own cost per step, not the data path's.
"""

from __future__ import annotations

import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import benchkit as bench

CONFIG = {"epochs": 1, "steps": 300, "batch_size": 32, "lr": 0.01}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )


def make_loader(steps: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = steps * batch_size
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)


def write_times(times: list[float]) -> None:
    path = os.environ.get("BENCH_STEP_TIMES")
    if path:
        with open(path, "w") as f:
            json.dump(times, f)


@bench.train(config=CONFIG)
def train(run: bench.Run) -> None:
    """The loop as the BenchKit README writes it."""
    model = make_model()
    optim = torch.optim.SGD(model.parameters(), lr=run.config["lr"])
    loader = make_loader(int(run.config["steps"]), int(run.config["batch_size"]))
    model, optim, loader = run.prepare(model, optim, loader)
    times: list[float] = []
    for _ in run.epochs():
        t = time.perf_counter()
        for x, y in run.progress(loader):
            loss = F.cross_entropy(model(x), y)
            run.backward(loss)
            optim.step()
            optim.zero_grad()
            run.log({"loss": loss})
            now = time.perf_counter()
            times.append(now - t)
            t = now
    if run.is_main_process:
        write_times(times)


def plain() -> None:
    """The same loop with plain Accelerate (the loss is read every step, as a logging loop would)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = make_model()
    optim = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"])
    loader = make_loader(int(os.environ.get("BENCH_PLAIN_STEPS", CONFIG["steps"])), CONFIG["batch_size"])
    model, optim, loader = accelerator.prepare(model, optim, loader)
    times: list[float] = []
    losses: list[float] = []
    for _ in range(CONFIG["epochs"]):
        t = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            accelerator.backward(loss)
            optim.step()
            optim.zero_grad()
            losses.append(loss.item())
            now = time.perf_counter()
            times.append(now - t)
            t = now
    write_times(times)


if __name__ == "__main__":
    plain()
