"""The cat/dog example end to end against a Bench server, with nothing but the server's URL and
a key: migrate data, migrate code, run (once from the file, once from the stored version with
--resume), then runs, checkpoints, versions and datasets, as a user types them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serverkit import child_env

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catdog"


def load_make_data():
    spec = importlib.util.spec_from_file_location("catdog_make_data", EXAMPLE / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_catdog_against_a_server(sqlite_server, tmp_path):
    project = sqlite_server.create_project("catdog-" + tmp_path.name[-8:])
    data = tmp_path / "data"
    load_make_data().make(data, 120, size=32)
    work = tmp_path / "catdog"
    work.mkdir()
    shutil.copy(EXAMPLE / "train.py", work / "train.py")
    env = child_env(
        CATDOG_DATA=str(data),
        BENCHKIT_HOME=str(tmp_path / "home"),
        BENCHKIT_STORE=sqlite_server.url,
        BENCHKIT_API_KEY=project.key,
        BENCHKIT_PROJECT_ID=project.id,
    )

    def bk(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "benchkit", *args],
            capture_output=True, text=True, env=env, cwd=work, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, f"benchkit {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    bk("migrate", "data", "train.py", "--yes")
    datasets = json.loads(bk("datasets", "list", "--json"))
    assert [(d["name"], d["complete"]) for d in datasets] == [("train", True), ("val", True)]
    assert sum(d["samples"] for d in datasets) == 120
    bk("migrate", "code", "train.py", "-m", "first")
    [version] = json.loads(bk("versions", "list", "--json"))
    assert version["version"] == 1 and version["message"] == "first"
    out = bk("run", "train.py", "--cpu", "-c", "epochs=1", "--name", "catdog-server")
    assert "validation accuracy" in out
    out = bk(
        "run", "--version", "1", "--cpu", "-c", "epochs=2", "--name", "catdog-server", "--resume"
    )
    listed = json.loads(bk("runs", "list", "--json"))
    assert listed and all(r["status"] == "finished" for r in listed)
    first, second = listed[0], listed[-1]
    checkpoints = json.loads(bk("checkpoints", "list", "--json"))
    assert {c["run_id"] for c in checkpoints} <= {first["id"], second["id"]} and checkpoints
    shown = bk("runs", "show", second["id"])
    assert "val_accuracy" in shown
    bk("checkpoints", "get", checkpoints[-1]["ref"], "--dest", str(tmp_path / "ckpt"))
    assert any((tmp_path / "ckpt").rglob("meta.json"))
    assert project.key not in sqlite_server.log()
