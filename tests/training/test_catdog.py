"""The cat/dog example as a new user runs it: `benchkit run train.py` migrates the datasets and
trains the small CNN to a validation accuracy well above chance (threshold: 0.85 on 2 classes,
where chance is 0.5)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from benchkit.store import open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catdog"
THRESHOLD = 0.85


def load_make_data():
    spec = importlib.util.spec_from_file_location("catdog_make_data", EXAMPLE / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_catdog_example_trains_above_chance(cli, store, tmp_path, monkeypatch):
    data = tmp_path / "data"
    load_make_data().make(data, 600, size=32)
    monkeypatch.setenv("CATDOG_DATA", str(data))
    project = tmp_path / "catdog"
    project.mkdir()
    shutil.copy(EXAMPLE / "train.py", project / "train.py")
    code, out, err = cli("run", project / "train.py", "--cpu", "-c", "epochs=3", "-c", "seed=2")
    assert code == 0, out + err
    assert "validation accuracy" in out
    s = open_store(store)
    assert s.exists("datasets/train/index.json") and s.exists("datasets/val/index.json")
    [rid] = runs.list_run_ids(s)
    series = runs.metric_series(runs.read_events(s, rid))
    accuracy = series["val_accuracy"][-1][1]
    assert accuracy >= THRESHOLD, f"validation accuracy {accuracy:.3f} < {THRESHOLD}"
    assert [c.name for c in ckpt.list_checkpoints(s, rid)] == [
        "epoch-0001",
        "epoch-0002",
        "epoch-0003",
    ]
    code, out, _ = cli("runs", "show", rid)
    assert code == 0 and "val_accuracy" in out and "loss" in out
