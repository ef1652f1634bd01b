"""Faults injected for real into running trainings: a store that refuses writes for a while
(a read-only bind mount, or file modes when not root), a store down at the end, a process
killed with SIGKILL. Nothing logged may be lost, and every run must end in a true state."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from benchkit.store import open_store
from benchkit.training import runs

POINTS = 375

LOGGER = """
import os, time
from pathlib import Path
import benchkit as bench

SIGNALS = Path(os.environ["SIGNALS"])


def signal(name):
    (SIGNALS / name).write_text("")


def wait(name):
    while not (SIGNALS / name).exists():
        time.sleep(0.02)


@bench.train(config={"points": 375, "ro_at": 100, "back_at": 300, "ckpt_at": 50, "kill": False})
def fit(run):
    for i in range(run.config.points):
        run.log({"x": float(i), "sq": float(i * i)})
        if i == run.config.ckpt_at:
            run.save_checkpoint("early")
            signal("checkpointed")
        if i == run.config.ro_at:
            signal("logged")      # the test now makes the store read-only
            wait("readonly")
        if i == run.config.back_at:
            if run.config.kill:
                signal("killme")
                time.sleep(3600)
            wait("writable")      # the store accepts writes again
        time.sleep(0.01)
    signal("done")
"""


def points(store_path, rid):
    series = runs.metric_series(runs.read_events(open_store(store_path), rid))
    return [v for _, v in series.get("x", [])]


def test_metrics_survive_a_store_that_refuses_writes_for_3_seconds(
    switchable_store, module, tmp_path, start_run, wait_for
):
    signals = tmp_path / "signals"
    signals.mkdir()
    path = module("logger.py", LOGGER)
    proc = start_run(
        "run", path, "--cpu", cwd=tmp_path,
        env={"SIGNALS": str(signals), "BENCHKIT_HEARTBEAT_INTERVAL": "1", "COLUMNS": "40"},
    )  # fmt: skip
    wait_for(signals / "logged", proc)
    switchable_store.read_only()
    (signals / "readonly").write_text("")
    time.sleep(3)  # a batch or two is refused meanwhile
    switchable_store.writable()
    (signals / "writable").write_text("")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "kept and retried" in out  # the fault did hit a write
    s = open_store(switchable_store.path)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.unsent is None
    assert points(switchable_store.path, rid) == [float(i) for i in range(POINTS)]
    assert "sync" not in out  # nothing was left to send
    # the closing hint's command is alone on its line, whole, even on a 40-column terminal
    assert f"  benchkit runs show {runs.short_id(rid)}" in out.splitlines()


def test_store_down_at_the_end_keeps_everything_for_sync_and_sync_is_idempotent(
    switchable_store, module, tmp_path, start_run, cli, wait_for
):
    signals = tmp_path / "signals"
    signals.mkdir()
    path = module("logger.py", LOGGER)
    proc = start_run(
        "run", path, "--cpu", "-c", "back_at=-1", cwd=tmp_path,
        env={"SIGNALS": str(signals), "BENCHKIT_DRAIN_TIMEOUT": "1"},
    )  # fmt: skip
    wait_for(signals / "logged", proc)
    switchable_store.read_only()  # and it stays so until the run has ended
    (signals / "readonly").write_text("")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    flat = " ".join(out.split())
    [rid] = os.listdir(switchable_store.real / "runs")
    assert f"benchkit sync {rid}" in flat  # printed whole, on one line
    rec = runs.load_record(open_store(switchable_store.path), rid)
    assert rec.status == runs.RUNNING  # the store refused the final record too
    switchable_store.writable()
    code, out, err = cli("sync", runs.short_id(rid))
    assert code == 0, err
    rec = runs.load_record(open_store(switchable_store.path), rid)
    assert rec.status == runs.FINISHED and rec.unsent is None and rec.ended
    assert points(switchable_store.path, rid) == [float(i) for i in range(POINTS)]
    code, out, err = cli("sync")  # again: nothing left, nothing doubled
    assert code == 0 and "nothing to sync" in out
    assert points(switchable_store.path, rid) == [float(i) for i in range(POINTS)]


def test_metrics_refused_to_the_end_are_noted_in_the_finished_record_and_sync_sends_them(
    store, module, tmp_path, start_run, cli, wait_for, read_only
):
    """Only the run's metrics folder refuses writes (a read-only bind mount of it), from
    step 100 to the end: the record, still writable, ends finished *and* says how many
    records are not in the store and how to send them; `runs list` and `runs show` say so."""
    signals = tmp_path / "signals"
    signals.mkdir()
    path = module("logger.py", LOGGER)
    proc = start_run(
        "run", path, "--cpu", "-c", "back_at=-1", cwd=tmp_path,
        env={"SIGNALS": str(signals), "BENCHKIT_DRAIN_TIMEOUT": "1"},
    )  # fmt: skip
    wait_for(signals / "logged", proc)  # after the checkpoint at step 50: metrics/ exists
    [rid] = os.listdir(store / "runs")
    with read_only(store / "runs" / rid / "metrics"):
        (signals / "readonly").write_text("")
        out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    s = open_store(store)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.ended
    assert rec.unsent and rec.unsent["records"] > 0 and rec.unsent["reason"]
    assert rec.unsent["command"] == f"benchkit sync {rid}"
    assert len(points(store, rid)) < POINTS  # the fault did keep points out of the store
    assert f"benchkit sync {rid}" in " ".join(out.split())
    code, out, _ = cli("runs", "list")
    assert code == 0 and "finished*" in out and "not in the store yet" in out
    code, out, _ = cli("runs", "show", rid)
    flat = " ".join(out.split())
    assert f"{rec.unsent['records']} metric record(s) are not in the store yet" in flat
    assert f"run: benchkit sync {rid}" in flat
    code, _, err = cli("sync", runs.short_id(rid))
    assert code == 0, err
    assert runs.load_record(s, rid).unsent is None
    assert points(store, rid) == [float(i) for i in range(POINTS)]


def test_killed_run_shows_lost_and_sync_sends_what_it_journaled(
    switchable_store, module, tmp_path, start_run, cli, monkeypatch, wait_for
):
    signals = tmp_path / "signals"
    signals.mkdir()
    path = module("logger.py", LOGGER)
    proc = start_run(
        "run", path, "--cpu", "-c", "kill=true", cwd=tmp_path,
        env={"SIGNALS": str(signals), "BENCHKIT_HEARTBEAT_INTERVAL": "0.5"},
    )  # fmt: skip
    wait_for(signals / "logged", proc)
    switchable_store.read_only()
    (signals / "readonly").write_text("")
    wait_for(signals / "killme", proc)
    time.sleep(1.5)  # the journal thread has journaled the points (every 0.2 s, fsync every 1 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    switchable_store.writable()
    s = open_store(switchable_store.path)
    [rid] = runs.list_run_ids(s)
    # nothing logged before the checkpoint is missing, even before the sync
    assert points(switchable_store.path, rid)[:51] == [float(i) for i in range(51)]
    monkeypatch.setenv("BENCHKIT_HEARTBEAT_TIMEOUT", "2")
    deadline = time.monotonic() + 30
    while runs.shown_status(s, runs.load_record(s, rid)) != runs.LOST:
        assert time.monotonic() < deadline, "a killed run still shows as running"
        time.sleep(0.2)
    code, out, _ = cli("runs", "list", "--json")
    assert json.loads(out)[0]["status"] == "lost"
    code, out, _ = cli("runs", "show", rid)
    assert "lost" in out and f"  benchkit run --resume {runs.short_id(rid)}" in out.splitlines()
    code, out, err = cli("sync", rid)  # a crashed run: its journal's torn tail is ignored
    assert code == 0, err
    assert points(switchable_store.path, rid) == [float(i) for i in range(301)]


@pytest.mark.parametrize("damage", ["truncated", "not a record"])
def test_a_damaged_run_record_is_rebuilt_not_blanked_and_resume_keeps_the_config(
    store, module, cli, damage
):
    path = module(
        "resumable.py",
        """
import benchkit as bench


@bench.train(config={"epochs": 3, "lr": 0.5, "damage": ""})
def fit(run):
    for epoch in run.epochs():
        run.log({"lr": run.config.lr, "seed": run.config.seed})
        run.save_checkpoint()
        if run.config.damage and epoch == 0:
            from pathlib import Path
            key = Path(run.store.url) / "runs" / run.run_id / "run.json"
            text = key.read_text()
            key.write_text(text[: len(text) // 2] if run.config.damage == "truncated" else "[]")
        if run.config.damage and epoch == 1:
            raise KeyboardInterrupt
""",
    )
    code, _, err = cli(
        "run", path, "--cpu", "-c", "lr=0.125", "-c", "seed=7", "-c", f"damage={damage}"
    )
    assert code == 130, err
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    # the second checkpoint found the record damaged: rebuilt from the first checkpoint
    assert rec.rebuilt and rec.rebuilt["damaged"].startswith(f"runs/{rid}/run.damaged-")
    assert rec.name == "fit" and rec.config["lr"] == 0.125 and rec.config["seed"] == 7
    assert [c["name"] for c in rec.checkpoints] == ["epoch-0001", "epoch-0002"]
    assert s.exists(rec.rebuilt["damaged"])
    code, _, err = cli("run", path, "--cpu", "--resume", runs.short_id(rid), "-c", "damage=")
    assert code == 0, err
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.config["lr"] == 0.125 and rec.config["seed"] == 7
    lrs = [v for _, v in runs.metric_series(runs.read_events(s, rid))["lr"]]
    assert lrs == [0.125, 0.125, 0.125]  # never the default 0.5


def test_a_record_the_store_cannot_read_for_a_moment_is_retried_not_replaced(store):
    """While a checkpoint is saved, the store fails to read ``run.json`` (here: it is a
    symbolic link loop, an OSError that is neither 'missing' nor 'damaged'); the read is
    retried, and once the store reads it again the record keeps its name and config."""
    import logging

    import torch

    import benchkit as bench

    record_file: list = []

    class RestoreOnRetry(logging.Handler):
        """Puts run.json back when the first failed read is logged (so the fault holds for
        exactly one attempt, whatever the machine's speed)."""

        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage() and record_file:
                path, text = record_file.pop()
                path.unlink()
                path.write_text(text)

    handler = RestoreOnRetry(logging.WARNING)
    logging.getLogger("benchkit.training.runs").addHandler(handler)
    try:
        with bench.Run({"epochs": 2, "lr": 0.125}, name="kept", cpu=True) as run:
            run.prepare(torch.nn.Linear(2, 1))  # a checkpoint holds a model
            for epoch in run.epochs():
                run.log({"epoch": float(epoch)})
                if epoch == 1:
                    path = store / "runs" / run.run_id / "run.json"
                    record_file.append((path, path.read_text()))
                    path.unlink()
                    path.symlink_to(path.name)  # reading it now fails with ELOOP
                run.save_checkpoint()
    finally:
        logging.getLogger("benchkit.training.runs").removeHandler(handler)
    assert not record_file, "the fault was never hit"
    rec = runs.load_record(open_store(store), run.run_id)
    assert rec.name == "kept" and rec.config["lr"] == 0.125 and rec.rebuilt is None
    assert [c["name"] for c in rec.checkpoints] == ["epoch-0001", "epoch-0002"]
    assert rec.status == runs.FINISHED


def test_runs_list_skips_an_unreadable_record_with_a_warning(store, module, cli):
    path = module(
        "two.py",
        """
import benchkit as bench


@bench.train
def fit(run):
    run.log({"x": 1.0})
""",
    )
    assert cli("run", path, "--cpu", "--name", "good")[0] == 0
    assert cli("run", path, "--cpu", "--name", "bad")[0] == 0
    s = open_store(store)
    good, bad = runs.list_run_ids(s)
    (store / "runs" / bad / "run.json").write_text('{"id": "x", "na')
    code, out, err = cli("runs", "list")
    assert code == 0 and runs.short_id(good) in out and runs.short_id(bad) not in out
    assert f"skipped run {bad}" in " ".join(err.split()) and "runs repair" in err
    code, out, err = cli("runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [good]


def test_nan_and_inf_in_config_and_metrics_stay_floats_through_resume(store, module, cli):
    path = module(
        "nan.py",
        """
import math
import benchkit as bench


@bench.train(config={"epochs": 2, "clip": float("inf"), "floor": float("nan"), "stop": True})
def fit(run):
    for epoch in run.epochs():
        assert isinstance(run.config.clip, float) and math.isinf(run.config.clip)
        assert isinstance(run.config.floor, float) and math.isnan(run.config.floor)
        run.log({"loss": float("nan"), "grad": float("-inf")})
        run.save_checkpoint()
        if run.config.stop:
            raise KeyboardInterrupt
""",
    )
    assert cli("run", path, "--cpu")[0] == 130
    code, _, err = cli("run", path, "--cpu", "--resume", "-c", "stop=false")
    assert code == 0, err
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.config["clip"] == float("inf") and rec.config["floor"] != rec.config["floor"]
    series = runs.metric_series(runs.read_events(s, rid))
    assert len(series["loss"]) == 2 and all(v != v for _, v in series["loss"])
    assert [v for _, v in series["grad"]] == [float("-inf")] * 2


PLAIN_LOOP = """
import os, time
from pathlib import Path
import torch
import benchkit as bench


@bench.train(config={"epochs": 2, "pause": 0.02})
def fit(run):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(160, 2, generator=g), torch.randn(160, 1, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model, opt, loader = run.prepare(model, opt, loader)
    for epoch in run.epochs():
        for x, y in loader:  # a plain loop: nothing in it knows about stopping
            loss = torch.nn.functional.mse_loss(model(x), y)
            run.backward(loss); opt.step(); opt.zero_grad()
            run.log({"loss": loss})
            if run.step == 15 and run.is_main_process:
                Path(os.environ["SIGNALS"], "step15").write_text("")
            time.sleep(run.config.pause)
        run.save_checkpoint()
"""


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.multiprocess)])
def test_sigterm_checkpoints_at_the_next_step_and_ends_interrupted(
    store, module, tmp_path, start_run, wait_for, cli, processes, monkeypatch
):
    signals = tmp_path / "signals"
    signals.mkdir()
    path = module("plain_loop.py", PLAIN_LOOP)
    proc = start_run(
        "run", path, "--cpu", "-n", processes, cwd=tmp_path, env={"SIGNALS": str(signals)}
    )
    wait_for(signals / "step15", proc)
    proc.send_signal(signal.SIGTERM)  # what a scheduler or a spot reclaim sends
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143, out
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.INTERRUPTED and "SIGTERM" in rec.traceback
    [saved] = rec.checkpoints  # one mid-epoch checkpoint, taken once for all processes
    # at the first step boundary after the signal: step 15 itself when it came before that boundary
    assert saved["name"].startswith("epoch-0001-step-") and saved["step"] >= 15
    # the printed command, alone on its line, continues the run as it is (no module needed)
    hint = f"  benchkit run --resume {runs.short_id(rid)}"
    assert hint in out.splitlines(), out
    monkeypatch.chdir(tmp_path.parent)  # anywhere: the run knows its module
    code, _, err = cli(*hint.split()[1:], "--cpu", "-c", "pause=0")
    assert code == 0, err
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and rec.checkpoints[-1]["name"] == "epoch-0002"


BLOCKED = """
import os, time
from pathlib import Path
import benchkit as bench


@bench.train(config={})
def fit(run):
    run.log({"x": 1.0})
    Path(os.environ["SIGNALS"], "blocked").write_text("")
    time.sleep(3600)  # one blocking call: no step boundary, no return to Python for an hour
"""


def test_sigterm_stops_a_run_stuck_in_a_blocking_call_after_the_grace(
    store, module, tmp_path, start_run, wait_for
):
    signals = tmp_path / "signals"
    signals.mkdir()
    proc = start_run(
        "run", module("blocked.py", BLOCKED), "--cpu", cwd=tmp_path,
        env={"SIGNALS": str(signals), "BENCHKIT_STOP_GRACE": "2"},
    )  # fmt: skip
    wait_for(signals / "blocked", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)  # never an hour: the grace breaks the sleep
    assert proc.returncode == 143, out
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    rec = runs.load_record(s, rid)
    assert rec.status == runs.INTERRUPTED and "no step boundary within 2 s" in rec.traceback
    assert points_of(s, rid) == [1.0]  # what it logged before is kept


def points_of(s, rid):
    return [v for _, v in runs.metric_series(runs.read_events(s, rid)).get("x", [])]
