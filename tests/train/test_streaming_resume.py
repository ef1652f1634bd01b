"""Training on a streamed dataset: migrated on first run, killed mid-epoch with SIGKILL right
after its first checkpoint, resumed: the same samples in the same order and the same final
model as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from benchkit.store import open_store
from benchkit.train import checkpoints as ckpt
from benchkit.train import runs

STREAMED = """
import json, os, signal
import torch
import benchkit as bench


@bench.dataset("points", chunk_bytes="2KB")
def points():
    g = torch.Generator().manual_seed(0)
    for i in range(96):
        yield i, torch.randn(3, generator=g), torch.randn(1, generator=g)


@bench.train(config={"epochs": 2, "batch_size": 4, "lr": 0.05, "out": "", "kill_at_step": -1,
                     "ckpt_every": 10, "workers": 2})
def fit(run):
    loader = run.loader("points", shuffle=True, num_workers=run.config.workers)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=run.config.lr)
    model, opt, loader = run.prepare(model, opt, loader)
    seen = open(os.path.join(run.config.out, "seen.jsonl"), "a")
    for epoch in run.epochs():
        for i, x, y in run.progress(loader):
            seen.write(json.dumps([epoch] + i.tolist()) + "\\n"); seen.flush()
            loss = torch.nn.functional.mse_loss(model(x), y)
            run.backward(loss); opt.step(); opt.zero_grad()
            run.log({"loss": loss})
            if run.step % run.config.ckpt_every == 0:
                run.save_checkpoint()
                if run.step == run.config.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
    params = {k: v.detach().cpu() for k, v in run.unwrap_model(model).state_dict().items()}
    torch.save(params, os.path.join(run.config.out, "params.pt"))
"""


def seen(out):
    return [json.loads(line) for line in (out / "seen.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_mid_epoch_sigkill_and_resume_match_an_uninterrupted_run(
    module, store, tmp_path, benchkit_subprocess
):
    path = module("stream_fit.py", STREAMED)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    first = benchkit_subprocess("run", path, "--cpu", "-c", "seed=3", "-c", f"out={ref}", "--name", "ref",
                                cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "migrating it now" in first.stderr  # the dataset was not in the store yet
    killed = benchkit_subprocess(
        "run", path, "--cpu", "-c", "seed=3", "-c", f"out={cut}", "-c", "kill_at_step=10", "--name", "cut",
        cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert "migrating" not in killed.stderr
    s = open_store(store)
    [cut_id] = [r.id for r in runs.list_records(s) if r.name == "cut"]
    assert [c.name for c in ckpt.list_checkpoints(s, cut_id)] == ["epoch-0001-step-00000010"]
    assert len(seen(cut)) == 10
    resumed = benchkit_subprocess(
        "run", path, "--cpu", "--resume", cut_id, "-c", "kill_at_step=-1", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seen(cut) == seen(ref)
    assert len(seen(ref)) == 2 * 96 // 4
    a = torch.load(ref / "params.pt", weights_only=True)
    b = torch.load(cut / "params.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.load_record(s, cut_id).status == runs.FINISHED
