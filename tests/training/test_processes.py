"""Real processes on a streamed dataset (migrated by the first run): two processes through
torchrun on the CPU; and a run killed with SIGKILL mid-epoch right after its first checkpoint,
then resumed, compared with an uninterrupted run (same samples, same order, same model)."""

from __future__ import annotations

import json

import pytest
import torch

from benchkit.store import open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

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
    seen = open(os.path.join(run.config.out, f"seen-{run.process_index}.jsonl"), "a")
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
        run.save_checkpoint()
    params = {k: v.detach().cpu() for k, v in run.unwrap_model(model).state_dict().items()}
    torch.save(params, os.path.join(run.config.out, f"params-{run.process_index}.pt"))
"""


def seen(out, rank=0):
    return [json.loads(line) for line in (out / f"seen-{rank}.jsonl").read_text().splitlines()]


def params(out, rank=0):
    return torch.load(out / f"params-{rank}.pt", weights_only=True)


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
        # bare --resume: the latest run named "cut" that has a checkpoint
        "run",
        path,
        "--cpu",
        "--name",
        "cut",
        "--resume",
        "-c",
        "kill_at_step=-1",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seen(cut) == seen(ref)
    assert len(seen(ref)) == 2 * 96 // 4
    a, b = params(ref), params(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.load_record(s, cut_id).status == runs.FINISHED


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_log_once_checkpoint_once_agree_and_resume_after_a_kill(
    module, store, tmp_path, benchkit_subprocess
):
    """One uninterrupted two-process run checked for what DDP must give, then the same run
    killed with SIGKILL after a mid-epoch checkpoint and resumed in two processes."""
    path = module("ddp_fit.py", STREAMED)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    # no --cpu on a machine without GPU: what a new user types; gloo must be picked anyway
    common = ["--processes", "2", *(["--cpu"] if torch.cuda.is_available() else []), "-c", "seed=5",
              "-c", "workers=1", "-c", "ckpt_every=7"]  # fmt: skip
    proc = benchkit_subprocess(
        "run", path, *common, "-c", f"out={ref}", "--name", "ref", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.world_size == 2
    # each rank streamed its half of the 96 samples per epoch (12 batches of 4); no overlap
    r0, r1 = seen(ref, 0), seen(ref, 1)
    assert len(r0) == len(r1) == 2 * 12
    for epoch in (0, 1):
        ids = [i for b in r0 + r1 if b[0] == epoch for i in b[1:]]
        assert sorted(ids) == list(range(96))
    # metrics were logged by the main process only: one value per step
    steps = [e["step"] for e in runs.read_events(s, rid) if "values" in e]
    assert steps == list(range(24))
    # five saves (steps 7, 12, 14, 21, 24), one stored object each, the last three kept
    assert sum("saved" in e.get("message", "") for e in runs.read_events(s, rid)) == 5
    found = ckpt.list_checkpoints(s, rid)
    assert [c.name for c in found] == [
        "epoch-0002-step-00000014",
        "epoch-0002-step-00000021",
        "epoch-0002",
    ]
    assert s.list(f"checkpoints/{rid}/") == sorted(c.key for c in found)
    dest = ckpt.fetch_checkpoint(s, rid, "epoch-0002", tmp_path / "ck")
    assert (dest / "random_states_0.pkl").exists() and (dest / "random_states_1.pkl").exists()
    p0, p1 = params(ref, 0), params(ref, 1)
    assert all(torch.equal(p0[k], p1[k]) for k in p0)

    killed = benchkit_subprocess(
        "run",
        path,
        *common,
        "-c",
        f"out={cut}",
        "-c",
        "kill_at_step=7",
        "--name",
        "cut",
        cwd=tmp_path,
    )
    assert killed.returncode != 0
    [cut_id] = [r.id for r in runs.list_records(s) if r.name == "cut"]
    rec = runs.load_record(s, cut_id)
    assert (
        rec.status == runs.FAILED and "torchrun exited" in rec.traceback
    )  # recorded by the launcher
    resumed = benchkit_subprocess(
        "run", path, *common, "--resume", cut_id, "-c", "kill_at_step=-1", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for rank in (0, 1):
        assert seen(cut, rank) == seen(ref, rank)
        a, b = params(ref, rank), params(cut, rank)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.load_record(s, cut_id).status == runs.FINISHED


SLEEPY = """
import pathlib, time
import benchkit as bench


@bench.train(config={"out": ""})
def wait_forever(run):
    pathlib.Path(run.config.out, f"started-{run.process_index}").touch()
    while True:
        time.sleep(0.05)
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ctrl_c_on_two_processes_records_interrupted_and_exits_130(module, store, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = module("sleepy.py", SLEEPY)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchkit", "run", str(path), "--cpu", "--processes", "2", "-c", f"out={out}"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not all((out / f"started-{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    # torchrun's own SignalException stays out of the log: a stop is not a crash
    assert "SignalException" not in output and "Traceback" not in output, output
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.INTERRUPTED and rec.ended


REDUCING = """
import os, pathlib, time
import torch
import benchkit as bench


@bench.train(config={"out": ""})
def reduce_forever(run):
    pathlib.Path(run.config.out, f"pid-{run.process_index}").write_text(str(os.getpid()))
    while True:  # no step boundary: a SIGTERM ends it after BENCHKIT_STOP_GRACE
        run.reduce(torch.ones(1), "sum")
        time.sleep(0.01)
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_sigterm_that_reaches_the_ranks_apart_records_interrupted_not_failed(
    module, store, tmp_path
):
    """The nodes of a multi-node job get their stop at different moments: rank 1 stops first
    and leaves the all-reduce rank 0 is in. Rank 0 was asked to stop too, so the run is
    interrupted, not failed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = module("reducing.py", REDUCING)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "BENCHKIT_STOP_GRACE": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchkit", "run", str(path), "--cpu", "--processes", "2", "-c", f"out={out}"],
        cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not all((out / f"pid-{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        time.sleep(0.5)  # the pid files are written before the first reduce
        os.kill(int((out / "pid-1").read_text()), signal.SIGTERM)  # the peer's node first
        time.sleep(0.5)
        os.kill(int((out / "pid-0").read_text()), signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.INTERRUPTED, output + (rec.traceback or "")
    assert "SIGTERM" in (rec.traceback or ""), rec.traceback
