"""A stored version runs end to end from a fresh directory: ``benchkit run --version N``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchkit.code import migrate_code

TRAIN = """
import benchkit as bench
import marker_lib
from tools.paths import where


@bench.train(config={"out": ""})
def train(run):
    marker_lib.write(run.config["out"], where())
"""
MARKER_LIB = """
import json


def write(path, origin):
    with open(path, "w") as f:
        json.dump({"origin": origin, "module": __file__}, f)
"""


@pytest.mark.slow
def test_pulled_version_runs_end_to_end_with_run_version(tmp_path: Path, write) -> None:
    project = write(
        tmp_path / "proj",
        {
            "benchkit.toml": '[project]\nname = "e2e"\n',
            "train.py": TRAIN,
            "marker_lib.py": MARKER_LIB,
            "tools/__init__.py": "",
            "tools/paths.py": "import os\n\ndef where():\n    return os.path.dirname(os.path.abspath(__file__))\n",
        },
    )
    store = tmp_path / "store"
    assert migrate_code(project / "train.py", str(store)).version == 1
    shutil.rmtree(project)  # the package alone must be enough
    marker = tmp_path / "marker.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchkit",
            "run",
            "--version",
            "1",
            "--store",
            str(store),
            "--cpu",
            "--config",
            f"out={marker}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert marker.is_file(), f"the train function did not run:\n{run.stdout}\n{run.stderr}"
    written = json.loads(marker.read_text())
    # both project-local modules came from the checked-out copy, not from the deleted project
    checkout_dir = Path(written["origin"]).parent
    assert Path(written["module"]).parent == checkout_dir
    assert not str(checkout_dir).startswith(str(tmp_path / "proj"))
