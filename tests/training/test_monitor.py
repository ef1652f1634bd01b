"""The evaluation criterion: ``@bench.train(monitor=..., mode=...)`` is recorded with the run,
and ``save_checkpoint`` keeps the best checkpoint by it besides the last ``keep_checkpoints``."""

from __future__ import annotations

import pytest

import benchkit as bench
from benchkit.errors import ConfigError
from benchkit.store import open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

#: the monitored metric at the end of epochs 1..5: best (max) at epoch 2, best (min) at epoch 5
SCORES = [0.5, 0.9, 0.6, 0.7, 0.4]


def fit(run: bench.Run) -> None:
    import torch

    model = run.prepare(torch.nn.Linear(2, 1))
    for epoch in run.epochs():
        run.log({"loss": float(epoch)})
        run.log({"val_accuracy": SCORES[epoch]})
        run.save_checkpoint()
    return model


def test_the_decorator_takes_a_criterion_and_refuses_a_bad_one():
    f = bench.train(config={"epochs": 1}, monitor="val_accuracy", mode="min")(lambda run: None)
    assert (f.monitor, f.mode) == ("val_accuracy", "min")
    g = bench.train(monitor="val_accuracy")(lambda run: None)
    assert g.mode == "max"  # more is better unless told otherwise
    assert bench.train(lambda run: None).monitor is None
    with pytest.raises(ConfigError, match="'max' or 'min'"):
        bench.train(monitor="acc", mode="highest")
    with pytest.raises(ConfigError, match="needs monitor"):
        bench.train(mode="max")
    with pytest.raises(ConfigError, match="names a logged metric"):
        bench.train(monitor="")


@pytest.mark.parametrize("mode, best", [("max", "epoch-0002"), ("min", "epoch-0005")])
def test_the_best_checkpoint_is_kept_besides_the_last_ones(store, mode, best):
    config = {"epochs": 5, "keep_checkpoints": 2}
    with bench.Run(config, name="m", cpu=True, monitor="val_accuracy", mode=mode) as run:
        fit(run)
    s = open_store(store)
    rec = runs.load_record(s, run.run_id)
    assert (rec.monitor, rec.mode, rec.best_checkpoint) == ("val_accuracy", mode, best)
    names = [c.name for c in ckpt.list_checkpoints(s, run.run_id)]
    assert names == sorted({best, "epoch-0004", "epoch-0005"})
    values = {c["name"]: c["value"] for c in rec.checkpoints}
    assert values[best] == (max if mode == "max" else min)(SCORES)


def test_without_a_criterion_only_the_last_ones_are_kept(store):
    with bench.Run({"epochs": 5, "keep_checkpoints": 2}, name="m", cpu=True) as run:
        fit(run)
    s = open_store(store)
    assert [c.name for c in ckpt.list_checkpoints(s, run.run_id)] == ["epoch-0004", "epoch-0005"]
    assert runs.load_record(s, run.run_id).best_checkpoint is None
