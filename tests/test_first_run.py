"""The first run works: `benchkit startproject DIR`, then exactly the printed "next:" commands,
train without error on a machine that has nothing yet (no images, no datasets, no runs)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchkit.settings import get_paths
from benchkit.store import LocalStore
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs


def _env() -> dict[str, str]:
    # `python` in the printed commands is this interpreter, as in an activated virtualenv
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def startproject(tmp_path, name: str = "proj") -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "startproject", name],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return [line.strip() for line in lines[lines.index("next:") + 1 :] if line.strip()]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_startproject_then_the_printed_next_commands_train(tmp_path):
    steps = startproject(tmp_path)
    assert steps[0] == "cd proj" and any("benchkit run" in s for s in steps)
    proc = subprocess.run(
        ["bash", "-ec", "\n".join(steps)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = LocalStore(get_paths().default_store)
    assert sorted(store.list_dirs("datasets/")) == ["train", "val"]
    [record] = runs.list_records(store)
    assert record.status == runs.FINISHED
    assert len(ckpt.list_checkpoints(store, record.id)) == record.config["epochs"]


@pytest.mark.parametrize("script", ["train.py", "TrainScript.py"])
def test_a_dataset_that_cannot_be_migrated_yet_fails_before_any_run_is_recorded(tmp_path, script):
    startproject(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "run", script],
        cwd=tmp_path / "proj", env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "no images in" in err and "python make_data.py" in err
    assert "Traceback" not in proc.stderr
    assert runs.list_records(LocalStore(get_paths().default_store)) == []
