"""The command line: migrate code, versions list/pull/delete/diff, the original's aliases and
the classic ``manage.py migrate-code``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchkit.cli.main import main
from benchkit.code import get_manifest, list_versions
from benchkit.errors import CodePackageError


@pytest.fixture
def two_versions(project: Path, store, capsys):
    url = str(store.root)
    assert main(["migrate", "code", str(project / "train.py"), "--store", url, "-m", "first"]) == 0
    (project / "helpers.py").write_text("VALUE = 43\n")
    (project / "extra.py").write_text("")
    (project / "train.py").write_text((project / "train.py").read_text() + "import extra\n")
    (project / "models" / "layers.py").unlink()
    (project / "models" / "net.py").write_text("")
    assert main(["migrate", "code", str(project / "train.py"), "--store", url, "-m", "second"]) == 0
    capsys.readouterr()
    return url


def test_migrate_code_reports_the_version_and_then_unchanged(project: Path, store, capsys) -> None:
    url = str(store.root)
    assert main(["migrate", "code", str(project / "train.py"), "--store", url]) == 0
    assert "stored code version 1" in capsys.readouterr().out
    assert main(["migrate", "code", str(project / "train.py"), "--store", url, "-m", "again"]) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and "code version 1 already holds this code" in out
    assert [m.version for m in list_versions(store)] == [1]


def test_migrate_code_existing_version_needs_force(project: Path, store, capsys) -> None:
    url = str(store.root)
    assert (
        main(["migrate", "code", str(project / "train.py"), "--store", url, "--version", "4"]) == 0
    )
    (project / "helpers.py").write_text("VALUE = 5\n")
    assert (
        main(["migrate", "code", str(project / "train.py"), "--store", url, "--version", "4"]) == 1
    )
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "migrate",
                "code",
                str(project / "train.py"),
                "--store",
                url,
                "--version",
                "4",
                "--force",
            ]
        )
        == 0
    )
    assert "replaced code version 4" in capsys.readouterr().out


def test_migrate_code_without_file_uses_train_py_here(
    project: Path, store, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(project)
    assert main(["migrate", "code", "--store", str(store.root)]) == 0
    assert get_manifest(store, 1).entry_point == "train.py"


def test_size_limit_flag(project: Path, store, capsys) -> None:
    assert (
        main(
            [
                "migrate",
                "code",
                str(project / "train.py"),
                "--store",
                str(store.root),
                "--max-size",
                "100B",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "over the 100 B limit" in err and "--max-size" in err


def test_versions_list_table_and_json(two_versions: str, capsys) -> None:
    assert main(["versions", "list", "--store", two_versions]) == 0
    out = capsys.readouterr().out
    for text in (
        "version",
        "created",
        "files",
        "size",
        "message",
        "entry point",
        "first",
        "second",
        "train.py",
    ):
        assert text in out
    assert main(["versions", "list", "--json", "--store", two_versions]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["message"], r["entry_point"]) for r in rows] == [
        (1, "first", "train.py"),
        (2, "second", "train.py"),
    ]
    assert all(r["archive_sha256"] and r["files"] for r in rows)


def test_show_vs_alias(two_versions: str, capsys) -> None:
    assert main(["show-vs", "--json", "--store", two_versions]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == [1, 2]


def test_versions_diff(two_versions: str, capsys) -> None:
    assert main(["versions", "diff", "1", "2", "--json", "--store", two_versions]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["added"] == ["extra.py"]
    assert d["removed"] == ["models/layers.py"]
    assert d["changed"] == ["helpers.py", "models/net.py", "train.py"]
    assert main(["versions", "diff", "1", "2", "--store", two_versions]) == 0
    out = capsys.readouterr().out
    assert "added" in out and "extra.py" in out and "removed" in out
    assert main(["versions", "diff", "2", "2", "--store", two_versions]) == 0
    assert "hold the same files" in capsys.readouterr().out


def test_versions_pull_and_pull_vs(two_versions: str, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "v1"
    assert main(["versions", "pull", "1", "--dest", str(dest), "--store", two_versions]) == 0
    assert (dest / "helpers.py").read_text() == "VALUE = 41 + 1\n"
    # pulling again over the same files is refused, then allowed with --force
    assert main(["pull-vs", "2", "--dest", str(dest), "--store", two_versions]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["pull-vs", "2", "--dest", str(dest), "--store", two_versions, "--force"]) == 0
    assert (dest / "helpers.py").read_text() == "VALUE = 43\n"


def test_versions_delete_needs_yes_and_del_vs_alias(two_versions: str, store, capsys) -> None:
    # without a terminal and without --yes nothing is deleted
    assert main(["versions", "delete", "1", "--store", two_versions]) == 1
    assert [m.version for m in list_versions(store)] == [1, 2]
    assert main(["versions", "delete", "1", "--yes", "--store", two_versions]) == 0
    assert main(["del-vs", "2", "--yes", "--store", two_versions]) == 0
    assert list_versions(store) == [] and store.list("code/") == []
    assert main(["versions", "delete", "2", "--yes", "--store", two_versions]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(CodePackageError):
        get_manifest(store, 1)


def test_classic_manage_py_migrate_code(tmp_path: Path) -> None:
    proj = tmp_path / "classic"
    assert main(["startproject", str(proj)]) == 0
    if not (proj / "TrainScript.py").exists():  # the template's own TrainScript, else a small one
        (proj / "TrainScript.py").write_text("from Datasets import ProjectDatasets\n")
    (proj / "data" / "train").mkdir(parents=True)
    (proj / "data" / "train" / "cat.0.jpg").write_bytes(b"raw image")
    run = subprocess.run(
        [sys.executable, "manage.py", "migrate-code", "3", "-m", "classic"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "code version 3" in run.stdout
    m = get_manifest(None, 3)  # the default store of the isolated home, as manage.py used it
    files = m.file_map()
    assert m.entry_point == "TrainScript.py" and m.message == "classic"
    assert "benchkit.toml" in files and "manage.py" not in files
    if "ProjectDatasets" in (proj / "TrainScript.py").read_text():
        assert "Datasets/ProjectDatasets.py" in files
    assert not [f for f in files if f.startswith("data/")]
    again = subprocess.run(
        [sys.executable, "manage.py", "migrate-code"],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "code version 3 already holds this code" in again.stdout


def test_versions_alone_lists_and_del_vs_without_number_asks(two_versions: str, capsys) -> None:
    assert main(["versions", "--store", two_versions]) == 0
    assert "second" in capsys.readouterr().out
    # the original's del-vs asked which version; without a terminal it says how to name one
    assert main(["del-vs", "--store", two_versions]) == 1
    assert "versions delete N --yes" in capsys.readouterr().err


def test_pull_defaults_to_code_v_n_here(two_versions: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["versions", "pull", "2", "--store", two_versions]) == 0
    assert (tmp_path / "code-v2" / "extra.py").is_file()
