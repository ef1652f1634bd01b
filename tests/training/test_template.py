"""The project template trains in both styles: the original's TrainScript.py (get_dataset,
get_accelerator, BenchAccelerateTracker, upload_model_checkpoint, wipe_temp) and the decorated
train.py, on the datasets of its classic Datasets/ProjectDatasets.py."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from benchkit.store import open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_template_trains_in_the_classic_and_the_decorated_style(
    cli, store, tmp_path, monkeypatch, benchkit_subprocess
):
    spec = importlib.util.spec_from_file_location(
        "catdog_make_data", ROOT / "examples/catdog/make_data.py"
    )
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.make(tmp_path / "data", 300, size=32)
    monkeypatch.setenv("CATDOG_DATA", str(tmp_path / "data"))
    project = tmp_path / "proj"
    shutil.copytree(ROOT / "project_template", project)
    monkeypatch.chdir(project)
    code, out, err = cli("migrate", "data", project / "Datasets" / "ProjectDatasets.py")
    assert code == 0, out + err
    s = open_store(store)

    # the classic script in two processes (its loss module goes through prepare, as in the original)
    proc = benchkit_subprocess("run", project / "TrainScript.py", "--processes", "2", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [classic] = runs.list_records(s)
    assert classic.name == "trial run" and classic.status == runs.FINISHED
    assert classic.config == {"epochs": 3, "bs": 32, "lr": 3e-3, "workers": 2}
    assert [c.name for c in ckpt.list_checkpoints(s, classic.id)] == [
        "epoch-0001",
        "epoch-0002",
        "epoch-0003",
    ]
    series = runs.metric_series(runs.read_events(s, classic.id))
    assert [step for step, _ in series["val_accuracy"]] == [0, 1, 2]
    # learning is the catdog test's business (this script has no fixed seed): valid values here
    assert all(0.0 <= v <= 1.0 for _, v in series["val_accuracy"])
    assert all(v == v and v >= 0 for _, v in series["train_loss"])

    code, out, err = cli("run", project / "train.py", "--cpu", "-c", "epochs=1")
    assert code == 0, out + err
    decorated = [r for r in runs.list_records(s) if r.name == "train"]
    assert len(decorated) == 1 and decorated[0].status == runs.FINISHED
    assert [c.name for c in ckpt.list_checkpoints(s, decorated[0].id)] == ["epoch-0001"]
