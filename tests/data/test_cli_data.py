"""``migrate data`` and ``datasets list|info|delete`` (and the original's aliases) end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchkit.cli.main import main
from benchkit.data.index import load_index
from benchkit.store import LocalStore

REPO = Path(__file__).resolve().parents[2]

TRAIN_PY = """
import os
from pathlib import Path
import benchkit as bench

HERE = Path(__file__).resolve().parent

@bench.dataset("train", chunk_bytes="8KB")
def train_samples():
    for p in sorted((HERE / "files").glob("*.bin")):
        yield bench.File(p), int(p.stem) % 2

@train_samples.transform
def decode(f, label):
    return len(f.read()), label

@bench.dataset("val", chunk_bytes="8KB")
def val_samples():
    for p in sorted((HERE / "files").glob("*.bin"))[:5]:
        yield {"data": bench.File(p), "id": int(p.stem)}
"""


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "files").mkdir(parents=True)
    for i in range(20):
        (root / "files" / f"{i:03d}.bin").write_bytes(bytes([i]) * (1000 + 50 * i))
    (root / "train.py").write_text(textwrap.dedent(TRAIN_PY))
    (root / "benchkit.toml").write_text('[project]\nname = "proj"\nstore = "store"\n')
    monkeypatch.chdir(root)
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.multiprocess
def test_migrate_data_end_to_end_then_list_info_delete(project, capsys):
    rc, out, err = run(capsys, "migrate", "data", "--workers", "1")
    assert rc == 0, err
    text = flat(out)
    for name in ("train", "val"):
        assert (
            f"chunked '{name}'" in text
            and f"tested '{name}'" in text
            and f"uploaded '{name}'" in text
        )
    assert "streamed 20 through 2 DataLoader workers, transform OK" in text
    store = LocalStore(project / "store")  # benchkit.toml's relative store
    assert load_index(store, "train").num_samples == 20
    assert load_index(store, "val").num_samples == 5

    rc, out, _ = run(capsys, "migrate", "data", "--upload")
    assert rc == 0 and flat(out).count("unchanged, nothing uploaded") == 2

    rc, out, _ = run(capsys, "datasets", "list", "--json")
    rows = json.loads(out)
    assert [(r["name"], r["samples"], r["complete"]) for r in rows] == [
        ("train", 20, True),
        ("val", 5, True),
    ]
    assert rows[0]["chunks"] == len(load_index(store, "train").chunks) and rows[0]["bytes"] > 20_000

    rc, out, _ = run(capsys, "show-ds")
    assert rc == 0 and "train" in out and "val" in out and "samples" in out

    rc, out, _ = run(capsys, "datasets", "info", "val", "--json")
    info = json.loads(out)
    assert info["schema"] == {
        "kind": "dict",
        "fields": {"data": {"kind": "file"}, "id": {"kind": "int"}},
    }
    assert info["num_samples"] == 5 and info["store"] == store.url
    rc, out, _ = run(capsys, "datasets", "info", "train")
    assert rc == 0 and "[0]: file" in out and "[1]: int" in out and "chunk sizes" in out

    # no terminal and no --yes: nothing is deleted
    rc, _, err = run(capsys, "datasets", "delete", "train")
    assert rc == 1 and "--yes" in err and store.exists("datasets/train/index.json")
    rc, out, _ = run(capsys, "del-ds", "val", "--yes")
    assert rc == 0 and "deleted" in out and store.list("datasets/val/") == []
    rc, out, _ = run(capsys, "datasets", "delete", "train", "-y")
    assert rc == 0
    rc, out, _ = run(capsys, "datasets", "--json")
    assert json.loads(out) == []

    rc, _, err = run(capsys, "datasets", "info", "train")
    assert rc == 1 and "migrate data" in flat(err)


def test_names_and_step_flags_limit_the_work(project, capsys):
    rc, out, err = run(capsys, "migrate", "data", "train.py", "val", "--zip", "--workers", "1")
    assert rc == 0, err
    staging = LocalStore(project / ".benchkit/staging")
    assert staging.list_dirs("datasets/") == ["val"]
    assert "tested" not in out and "uploaded" not in out
    assert not (project / "store").exists() or LocalStore(project / "store").list() == []

    rc, out, err = run(
        capsys, "migrate", "data", "train.py", "val", "--up", "--store", str(project / "other")
    )
    assert rc == 0, err
    assert load_index(LocalStore(project / "other"), "val").num_samples == 5
    assert LocalStore(project / "other").list_dirs("datasets/") == ["val"]


def test_default_module_is_found_from_a_subdirectory_of_the_project(project, capsys, monkeypatch):
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    rc, out, err = run(capsys, "migrate", "data", "val", "--chunk", "--workers", "1")
    assert rc == 0, err
    assert (project / ".benchkit/staging/datasets/val/index.json").is_file()


def test_no_module_here_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "migrate", "data")
    assert rc == 1 and "migrate data path/to/train.py" in flat(err)


def test_unknown_dataset_name_lists_the_declared_ones(project, capsys):
    rc, _, err = run(capsys, "migrate", "data", "train.py", "nope", "--chunk")
    assert rc == 1
    assert "no dataset named 'nope'" in flat(err) and "train, val" in flat(err)


def test_module_without_datasets_is_an_error(project, capsys):
    (project / "empty.py").write_text("x = 1\n")
    rc, _, err = run(capsys, "migrate", "data", "empty.py")
    assert rc == 1 and "declares no datasets" in flat(err)


def test_test_step_before_chunking_says_what_to_run(project, capsys):
    rc, _, err = run(capsys, "migrate", "data", "--tdl")
    assert rc == 1 and "migrate data --chunk" in flat(err)


def test_generator_failure_is_reported_with_the_sample(project, capsys):
    (project / "files" / "007.bin").unlink()
    (project / "files" / "007.bin").mkdir()  # not a readable file any more
    rc, _, err = run(capsys, "migrate", "data", "train", "--chunk", "--workers", "1")
    assert rc == 1 and "dataset 'train': sample 7" in flat(err)
    assert not (project / ".benchkit/staging/datasets/train").exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_classic_project_migrate_data_via_manage_py(tmp_path):
    """The template's ProjectDatasets.py (ProcessorDataset + IterableChunk + main()) through manage.py."""
    from benchkit.cli.project import copy_template

    # loaded by path under its own name: benchmarks/ has a make_data module too
    spec = importlib.util.spec_from_file_location(
        "catdog_make_data", REPO / "examples/catdog/make_data.py"
    )
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    project = tmp_path / "classic"
    copy_template(project, "classic")
    make_data.make(tmp_path / "images", 36, val_fraction=1 / 6, size=16)
    env = {
        **os.environ,
        "CATDOG_DATA": str(tmp_path / "images"),
        "BENCHKIT_STORE": str(tmp_path / "store"),
    }
    proc = subprocess.run(
        [sys.executable, str(project / "manage.py"), "migrate-data", "--workers", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = flat(proc.stdout)
    assert "chunked 'train': 30 samples" in out and "chunked 'val': 6 samples" in out
    assert "streamed 30 through 2 DataLoader workers" in out
    store = LocalStore(tmp_path / "store")
    assert load_index(store, "train").schema == {
        "kind": "tuple",
        "items": [{"kind": "int"}, {"kind": "list", "item": {"kind": "file"}}],
    }
    # the original's flags, one step at a time
    proc = subprocess.run(
        [sys.executable, str(project / "manage.py"), "migrate-data", "val", "--up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and "unchanged, nothing uploaded" in flat(proc.stdout), proc.stderr


def test_replacing_a_changed_dataset_in_the_store_needs_yes(project, capsys):
    rc, _, err = run(capsys, "migrate", "data", "val", "--chunk", "--upload", "--workers", "1")
    assert rc == 0, err
    store = LocalStore(project / "store")
    before = load_index(store, "val")
    (project / "files" / "000.bin").write_bytes(b"new content" * 10)
    rc, out, err = run(capsys, "migrate", "data", "val", "--chunk", "--upload", "--workers", "1")
    # no terminal to ask on and no --yes: nothing replaced, and the exit status says so
    assert rc == 1 and "uploaded" not in flat(out)
    assert "not uploaded: 'val'" in flat(err) and "Pass --yes" in flat(err)
    assert load_index(store, "val").chunks == before.chunks
    rc, out, err = run(capsys, "migrate", "data", "val", "--upload", "--yes")
    assert rc == 0 and "uploaded 'val'" in flat(out)
    assert load_index(store, "val").chunks != before.chunks


def test_list_marks_a_half_uploaded_dataset_incomplete(project, capsys):
    store = LocalStore(project / "store")
    store.put("datasets/half/chunk-000000-0123456789abcdef.bkc", b"partial")
    rc, out, _ = run(capsys, "datasets", "list", "--json")
    assert rc == 0 and json.loads(out) == [
        {
            "name": "half",
            "samples": None,
            "chunks": None,
            "bytes": None,
            "created": None,
            "complete": False,
        }
    ]
    rc, out, _ = run(capsys, "show-ds")
    assert "incomplete" in flat(out)
    rc, _, err = run(capsys, "datasets", "info", "half")
    assert rc == 1 and "not in store" in flat(err)
