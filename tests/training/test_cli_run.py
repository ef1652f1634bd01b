"""``benchkit run`` in this process: finding the function, config errors, recorded outcomes."""

from __future__ import annotations

import os

from benchkit.store import open_store
from benchkit.training import runs

HEADER = """
import torch
import benchkit as bench
"""

SIMPLE = (
    HEADER
    + """
@bench.train(config={"epochs": 1, "lr": 0.5, "out": ""})
def fit(run):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=run.config.lr)
    model, opt = run.prepare(model, opt)
    for epoch in run.epochs():
        loss = model(torch.ones(4, 2)).pow(2).mean()
        run.backward(loss); opt.step(); opt.zero_grad()
        run.log({"loss": loss})
    if run.config.out:
        open(run.config.out, "w").write(repr(run.config.lr))
"""
)


def only_run(store):
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    return runs.load_record(s, rid)


def test_run_calls_the_function_with_typed_config(cli, module, store, tmp_path):
    path = module("simple_ok.py", SIMPLE)
    out = tmp_path / "out.txt"
    code, _, err = cli(
        "run", path, "--cpu", "--config", "lr=0.25", "-c", f"out={out}", "--name", "exp1"
    )
    assert code == 0, err
    assert out.read_text() == "0.25"
    rec = only_run(store)
    assert rec.name == "exp1" and rec.status == runs.FINISHED and rec.config["lr"] == 0.25


def test_no_train_function_is_a_clear_error(cli, module, store):
    path = module("nothing.py", HEADER + "\nx = 1\n")
    code, _, err = cli("run", path)
    assert code == 1
    assert "no @bench.train function found" in err and "nothing.py" in err


def test_several_functions_need_fn(cli, module, store):
    path = module(
        "two.py", SIMPLE + "\n\n@bench.train\ndef other(run):\n    run.print('other ran')\n"
    )
    code, _, err = cli("run", path)
    assert code == 1 and "several @bench.train functions (fit, other)" in err and "--fn" in err
    code, out, err = cli("run", path, "--fn", "other", "--cpu")
    assert code == 0, err
    assert "other ran" in out
    code, _, err = cli("run", path, "--fn", "missing")
    assert code == 1 and "no @bench.train function named 'missing'" in err


def test_unknown_config_key_names_the_known_ones(cli, module, store):
    path = module("unknown_key.py", SIMPLE)
    code, _, err = cli("run", path, "--config", "learning_rate=1")
    assert code == 1
    assert "unknown config key 'learning_rate'" in err and "lr" in err and "epochs" in err
    assert runs.list_run_ids(open_store(store)) == []  # nothing was started


def test_failure_is_recorded_with_traceback_and_exit_status(cli, module, store):
    path = module(
        "fails.py",
        HEADER
        + """
@bench.train
def boom(run):
    run.log({"x": 1.0})
    raise ValueError("bad batch 7")
""",
    )
    code, _, err = cli("run", path, "--cpu")
    assert code == 1 and "bad batch 7" in err
    rec = only_run(store)
    assert rec.status == runs.FAILED and "ValueError: bad batch 7" in rec.traceback
    assert runs.last_values(runs.read_events(open_store(store), rec.id)) == {"x": 1.0}


def test_ctrl_c_is_recorded_as_interrupted_with_status_130(cli, module, store):
    path = module(
        "ctrlc.py",
        HEADER
        + """
@bench.train
def stop(run):
    raise KeyboardInterrupt
""",
    )
    code, _, _ = cli("run", path, "--cpu")
    assert code == 130
    assert only_run(store).status == runs.INTERRUPTED


def test_resume_without_a_checkpoint_is_an_error(cli, module, store):
    path = module("noresume.py", SIMPLE)
    code, _, err = cli("run", path, "--cpu", "--resume")
    assert code == 1 and "no run named 'fit' with a checkpoint" in err


def test_missing_dataset_that_cannot_be_migrated_is_a_clear_error(cli, module, store, tmp_path):
    path = module(
        "nodata.py",
        HEADER
        + f"""
from pathlib import Path


@bench.dataset("pictures")
def pictures():
    for p in sorted(Path({str(tmp_path / "no-such-dir")!r}).iterdir()):
        yield bench.File(p), 0


@bench.train(config={{"batch_size": 2}})
def fit(run):
    run.loader("pictures")
""",
    )
    code, _, err = cli("run", path, "--cpu")
    assert code == 1
    assert "pictures" in err and "no-such-dir" in err
    assert runs.list_run_ids(open_store(store)) == []  # training never started


def test_loader_of_an_unknown_dataset_fails_the_run_with_its_name(cli, module, store):
    path = module(
        "ghost.py",
        HEADER
        + """
@bench.train(config={"batch_size": 2})
def fit(run):
    for batch in run.loader("ghost"):
        pass
""",
    )
    code, _, err = cli("run", path, "--cpu")
    assert code == 1 and "ghost" in err
    rec = only_run(store)
    assert rec.status == runs.FAILED and "ghost" in rec.traceback


STOPPABLE = """
import benchkit as bench


@bench.train(config={"epochs": 2, "stop": True})
def fit(run):
    for epoch in run.epochs():
        run.log({"epoch": float(epoch)})
        run.save_checkpoint()
        if run.config.stop:
            raise KeyboardInterrupt
"""


def test_the_printed_resume_command_continues_the_run_from_its_recorded_module(
    cli, module, store, tmp_path, monkeypatch
):
    path = module("stoppable.py", STOPPABLE)
    code, _, err = cli("run", path, "--cpu")
    assert code == 130
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    assert runs.load_record(s, rid).module == str(path.resolve())
    command = f"  benchkit run --resume {runs.short_id(rid)}"
    assert command in err.splitlines(), err  # whole, on a line of its own
    monkeypatch.chdir(tmp_path.parent)  # the module is not in this directory
    code, _, err = cli(*command.split()[1:], "--cpu", "-c", "stop=false")
    assert code == 0, err
    rec = runs.load_record(s, rid)
    assert rec.status == runs.FINISHED and [c["name"] for c in rec.checkpoints] == [
        "epoch-0001", "epoch-0002",
    ]  # fmt: skip
    path.rename(path.with_name("moved.py"))
    code, _, err = cli("run", "--resume", runs.short_id(rid), "--cpu")
    flat = " ".join(err.split())
    assert code == 1 and f"give the training module of run {rid}" in flat
    assert f"it ran {path.resolve()}, which is not on this machine" in flat
    assert f"benchkit run path/to/train.py --resume {runs.short_id(rid)}" in flat


PRINTER = (
    HEADER
    + """
import os, time
@bench.train(config={"go": ""})
def fit(run):
    run.print("ready")
    while not os.path.exists(run.config.go):
        time.sleep(0.02)
    for i in range(200):
        run.print(f"line {i}")
    print("the user's own print")
    run.log({"done": 1})
"""
)


def test_a_closed_stdout_does_not_stop_the_run_and_its_messages_are_kept(module, store, tmp_path):
    """``benchkit run train.py | head -1``: once the reader goes, printing must neither fail the
    training nor lose the messages (they are still recorded in the run)."""
    import subprocess
    import sys

    path = module("printer.py", PRINTER)
    go = tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchkit", "run", str(path), "--cpu", "-c", f"go={go}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if b"ready" in line:
                break
        proc.stdout.close()  # the reader goes away, as `head -1` does
        go.touch()
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    rec = only_run(store)
    assert rec.status == runs.FINISHED
    messages = [e["message"] for e in runs.read_events(open_store(store), rec.id) if "message" in e]
    assert messages[0] == "ready" and messages[-1] == "line 199"
    assert b"stdout was closed" in err
