"""bench.Run in this process: the decorated function called directly, checkpoints, resume."""

from __future__ import annotations

import tarfile

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import benchkit as bench
from benchkit.errors import CheckpointError
from benchkit.registry import kind_of
from benchkit.store import open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

CONFIG = {"epochs": 3, "batch_size": 8, "lr": 0.1, "keep_checkpoints": 2}


def make(run):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    loader = DataLoader(data, batch_size=run.config.batch_size, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optim = torch.optim.Adam(model.parameters(), lr=run.config.lr)
    sched = torch.optim.lr_scheduler.StepLR(optim, 1, gamma=0.5)
    return run.prepare(model, optim, loader, sched)


@bench.train(config=CONFIG)
def train(run: bench.Run):
    model, optim, loader, sched = make(run)
    for _ in run.epochs():
        for x, y in run.progress(loader):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            run.backward(loss)
            optim.step()
            optim.zero_grad()
            run.log({"loss": loss})
        sched.step()
        run.save_checkpoint()
    return model


def test_decorator_marks_and_keeps_the_function():
    assert kind_of(train) == "train" and train.__benchkit_name__ == "train"
    assert train.config == CONFIG and train.__name__ == "train"


def test_direct_call_records_run_metrics_and_keeps_last_checkpoints(store):
    with bench.Run(train.config, name="direct", cpu=True) as run:
        train(run)
    s = open_store(store)
    rec = runs.load_record(s, run.run_id)
    assert rec.status == runs.FINISHED and rec.ended and rec.config["lr"] == 0.1
    assert isinstance(rec.config["seed"], int)  # a seed is always chosen and recorded
    series = runs.metric_series(runs.read_events(s, run.run_id))
    assert len(series["loss"]) == 3 * 4
    assert rec.last == {"loss": series["loss"][-1][1]}  # kept in the record for `runs list`
    names = [c.name for c in ckpt.list_checkpoints(s, run.run_id)]
    assert names == ["epoch-0002", "epoch-0003"]  # keep_checkpoints=2
    assert s.list(f"checkpoints/{run.run_id}/") == [f"checkpoints/{run.run_id}/{n}" for n in names]


def test_resume_restores_model_optimizer_scheduler_step_and_epoch(store):
    with bench.Run({**CONFIG, "epochs": 2, "seed": 5}, name="r", cpu=True) as run:
        model = train(run)
    saved = [p.detach().clone() for p in model.parameters()]
    with bench.Run(
        {**CONFIG, "epochs": 2, "seed": 5}, name="r", cpu=True, run_id=run.run_id, resume=True
    ) as again:
        model2, optim2, _, sched2 = make(again)
        assert list(again.epochs()) == []  # both epochs were done
        assert again.step == 8
        assert sched2.get_last_lr() == pytest.approx([0.1 * 0.25])
        assert optim2.state_dict()["state"], "optimizer moments were restored"
    for a, b in zip(saved, model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert runs.load_record(open_store(store), run.run_id).resumed


def test_a_failing_function_records_failed_with_traceback(store):
    with pytest.raises(ZeroDivisionError), bench.Run(CONFIG, name="bad", cpu=True) as run:
        raise ZeroDivisionError("boom")
    rec = runs.load_record(open_store(store), run.run_id)
    assert rec.status == runs.FAILED and "ZeroDivisionError" in rec.traceback


def _saved_run(store):
    with bench.Run({**CONFIG, "epochs": 1}, name="c", cpu=True) as run:
        train(run)
    s = open_store(store)
    return s, run.run_id, s.local_path(f"checkpoints/{run.run_id}/epoch-0001")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_checkpoint_is_refused_before_anything_is_loaded(store, damage):
    s, run_id, path = _saved_run(store)
    data = bytearray(path.read_bytes())
    if damage == "flip":  # one byte inside the stored model weights
        with tarfile.open(path) as tar:
            member = tar.getmember("model.safetensors")
        data[member.offset_data + member.size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(bytes(data[: len(data) // 3]))
    with bench.Run(CONFIG, name="c2", cpu=True) as run:
        model, *_ = make(run)
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(
            CheckpointError, match=f"checkpoint '{run_id}/epoch-0001'.*(corrupt|truncated|missing)"
        ):
            run.load_checkpoint("epoch-0001", run_id=run_id)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        assert run.step == 0


def test_missing_checkpoint_names_the_command_to_list_them(store):
    with (
        bench.Run(CONFIG, name="m", cpu=True) as run,
        pytest.raises(CheckpointError, match="checkpoints list"),
    ):
        run.load_checkpoint("nope")
