"""Real processes: a two-process torchrun run on the CPU, and a run killed with SIGKILL and
resumed, compared with an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from benchkit.store import open_store
from benchkit.train import checkpoints as ckpt
from benchkit.train import runs

PLAIN = """
import json, os, signal
import torch
from torch.utils.data import DataLoader, TensorDataset
import benchkit as bench


@bench.train(config={"epochs": 3, "batch_size": 4, "lr": 0.05, "out": "", "kill_after_epoch": -1})
def fit(run):
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(32)
    data = TensorDataset(ids, torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g))
    loader = DataLoader(data, batch_size=run.config.batch_size, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=run.config.lr)
    model, opt, loader = run.prepare(model, opt, loader)
    seen = open(os.path.join(run.config.out, f"seen-{run.process_index}.jsonl"), "a")
    for epoch in run.epochs():
        for i, x, y in run.progress(loader):
            seen.write(json.dumps([epoch] + i.tolist()) + "\\n"); seen.flush()
            loss = torch.nn.functional.mse_loss(model(x), y)
            run.backward(loss); opt.step(); opt.zero_grad()
            run.log({"loss": loss})
        run.save_checkpoint()
        if epoch == run.config.kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
    params = {k: v.detach().cpu() for k, v in run.unwrap_model(model).state_dict().items()}
    torch.save(params, os.path.join(run.config.out, f"params-{run.process_index}.pt"))
"""


def seen(out, rank=0):
    return [json.loads(line) for line in (out / f"seen-{rank}.jsonl").read_text().splitlines()]


def params(out, rank=0):
    return torch.load(out / f"params-{rank}.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_on_cpu_log_once_checkpoint_once_and_agree(
    module, store, tmp_path, benchkit_subprocess
):
    path = module("ddp_fit.py", PLAIN)
    out = tmp_path / "out"
    out.mkdir()
    proc = benchkit_subprocess(
        "run", path, "--processes", "2", "--cpu", "-c", "epochs=2", "-c", f"out={out}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.world_size == 2
    # each rank saw half of the 32 samples per epoch, in 4 batches of 4; they never overlap
    r0, r1 = seen(out, 0), seen(out, 1)
    assert len(r0) == len(r1) == 8
    for epoch in (0, 1):
        ids = [i for b in r0 + r1 if b[0] == epoch for i in b[1:]]
        assert sorted(ids) == list(range(32))
    # metrics were logged by the main process only: one value per step
    steps = [e["step"] for e in runs.read_events(s, rid) if "values" in e]
    assert steps == list(range(8))
    # one stored object per save, holding both ranks' RNG state
    found = ckpt.list_checkpoints(s, rid)
    assert [c.name for c in found] == ["epoch-0001", "epoch-0002"]
    assert s.list(f"checkpoints/{rid}/") == [c.key for c in found]
    dest = ckpt.fetch_checkpoint(s, rid, "epoch-0002", tmp_path / "ck")
    assert (dest / "random_states_0.pkl").exists() and (dest / "random_states_1.pkl").exists()
    p0, p1 = params(out, 0), params(out, 1)
    assert all(torch.equal(p0[k], p1[k]) for k in p0)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(
    module, store, tmp_path, benchkit_subprocess
):
    path = module("resume_fit.py", PLAIN)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    proc = benchkit_subprocess(
        "run", path, "--cpu", "-c", "seed=11", "-c", f"out={ref}", "--name", "ref", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    killed = benchkit_subprocess(
        "run", path, "--cpu", "-c", "seed=11", "-c", f"out={cut}", "-c", "kill_after_epoch=0", "--name", "cut",
        cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    s = open_store(store)
    cut_id = [r.id for r in runs.list_records(s) if r.name == "cut"][0]
    assert runs.load_record(s, cut_id).status == runs.RUNNING  # a SIGKILL leaves no trace but this
    assert [c.name for c in ckpt.list_checkpoints(s, cut_id)] == ["epoch-0001"]
    # resume the latest run named "cut"; the kill switch is turned off by an override
    resumed = benchkit_subprocess("run", path, "--cpu", "--name", "cut", "--resume", "-c", "kill_after_epoch=-1",
                                  cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seen(cut) == seen(ref)
    a, b = params(ref), params(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rec = runs.load_record(s, cut_id)
    assert rec.status == runs.FINISHED and len(rec.resumed) == 1
    steps = [p[0] for p in runs.metric_series(runs.read_events(s, cut_id))["loss"]]
    assert steps == list(range(24))
