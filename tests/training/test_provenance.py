"""A run records where its code came from: the stored code version (``run --version N``, or a
directory made by ``versions pull N``) and the project's git commit with a dirty flag; offline
runs journal only, and ``benchkit sync`` sends what they logged."""

from __future__ import annotations

import subprocess

from benchkit.code import migrate_code
from benchkit.store import open_store
from benchkit.training import runs

MODULE = """
import benchkit as bench


@bench.train
def fit(run):
    for i in range(5):
        run.log({"x": float(i)})
"""


def only(store):
    s = open_store(store)
    [rid] = runs.list_run_ids(s)
    return s, runs.load_record(s, rid)


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_commit_and_dirty_flag_are_recorded(tmp_path, store, cli):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(MODULE)
    git(project, "init", "-q")
    git(project, "add", "train.py")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    assert cli("run", project / "train.py", "--cpu")[0] == 0
    _, rec = only(store)
    assert rec.git == {"commit": head, "dirty": False} and rec.code_version is None
    (project / "train.py").write_text(MODULE + "\n# changed\n")
    assert cli("run", project / "train.py", "--cpu", "--name", "second")[0] == 0
    s = open_store(store)
    second = [r for r in runs.list_records(s) if r.name == "second"][0]
    assert second.git == {"commit": head, "dirty": True}
    code, out, _ = cli("runs", "show", second.id)
    assert f"git {head[:12]} (dirty)" in out


def test_code_version_is_recorded_for_run_version_and_for_a_pulled_directory(tmp_path, store, cli):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(MODULE)
    assert migrate_code(project / "train.py", str(store)).version == 1
    assert cli("run", "--version", "1", "--cpu")[0] == 0
    s, rec = only(store)
    assert rec.code_version == 1
    assert cli("versions", "pull", "1", "--dest", tmp_path / "pulled")[0] == 0
    assert cli("run", tmp_path / "pulled" / "train.py", "--cpu", "--name", "pulled")[0] == 0
    pulled = [r for r in runs.list_records(s) if r.name == "pulled"][0]
    assert pulled.code_version == 1
    code, out, _ = cli("runs", "show", pulled.id)
    assert "code version 1" in out


def test_offline_mode_journals_only_and_sync_sends_it(tmp_path, store, cli, module, monkeypatch):
    path = module("offline.py", MODULE)
    monkeypatch.setenv("BENCHKIT_MODE", "offline")
    code, _, err = cli("run", path, "--cpu")
    assert code == 0, err
    s, rec = only(store)
    assert runs.read_events(s, rec.id) == []  # nothing sent
    assert rec.status == runs.FINISHED and rec.unsent["records"] == 5
    assert f"benchkit sync {rec.id}" in err.replace("\n", " ")
    monkeypatch.delenv("BENCHKIT_MODE")
    assert cli("sync")[0] == 0
    _, rec = only(store)
    assert rec.unsent is None
    assert [v for _, v in runs.metric_series(runs.read_events(s, rec.id))["x"]] == [
        0.0, 1.0, 2.0, 3.0, 4.0,
    ]  # fmt: skip
