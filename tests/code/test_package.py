"""Building and storing code versions: reproducibility, numbering, the size guard, manifests."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from benchkit.code import (
    EMBEDDED_MANIFEST,
    build_package,
    get_manifest,
    list_versions,
    migrate_code,
)
from benchkit.code.package import archive_key, manifest_key
from benchkit.errors import CodePackageError


def test_same_files_give_byte_identical_archives(project: Path, tmp_path: Path) -> None:
    a = build_package(project / "train.py", tmp_path)
    first = a.archive.read_bytes()
    # new mtimes, a copy elsewhere, different file permissions on a non-executable file
    copy = tmp_path / "elsewhere" / "proj"
    shutil.copytree(project, copy)
    for p in copy.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    (copy / "helpers.py").chmod(0o600)
    (tmp_path / "b").mkdir()
    b = build_package(copy / "train.py", tmp_path / "b")
    assert b.archive.read_bytes() == first
    assert b.manifest.archive_sha256 == a.manifest.archive_sha256


def test_archive_headers_are_fixed_and_sorted(project: Path, tmp_path: Path) -> None:
    (project / "helpers.py").chmod(0o755)
    pkg = build_package(project / "train.py", tmp_path)
    raw = pkg.archive.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header time
    assert not raw[3] & 0x08  # no file name in the gzip header
    with tarfile.open(pkg.archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == EMBEDDED_MANIFEST and names[1:] == sorted(names[1:])
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.name == "helpers.py" else 0o644)


def test_created_time_and_message_are_not_in_the_archive(project: Path, store) -> None:
    result = migrate_code(project / "train.py", store, message="first try")
    with tarfile.open(fileobj=gzip.open(store.local_path(archive_key(1)))) as tar:
        embedded = json.load(tar.extractfile(EMBEDDED_MANIFEST))
    assert "created" not in embedded and "message" not in embedded
    stored = store.get_json(manifest_key(1))
    assert stored["message"] == "first try" and stored["created"]
    assert embedded["entry_point"] == stored["entry_point"] == "train.py"
    assert result.manifest.python and result.manifest.benchkit
    assert result.manifest.torch is not None and result.manifest.accelerate is not None
    files = {f.path: f for f in result.manifest.files}
    assert set(files) == {
        "benchkit.toml",
        "train.py",
        "helpers.py",
        "models/__init__.py",
        "models/net.py",
        "models/layers.py",
    }
    assert files["helpers.py"].size == len("VALUE = 41 + 1\n")


def test_unchanged_code_stores_no_new_version_and_names_the_one_holding_it(
    project: Path, store
) -> None:
    first = migrate_code(project / "train.py", store)
    again = migrate_code(project / "train.py", store, message="again")
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    assert [m.version for m in list_versions(store)] == [1]


def test_changed_file_gives_a_new_version(project: Path, store) -> None:
    migrate_code(project / "train.py", store)
    (project / "models" / "layers.py").write_text("import numpy\nclass Layer:\n    size = 2\n")
    second = migrate_code(project / "train.py", store, message="bigger layer")
    assert (second.version, second.created) == (2, True)
    m1, m2 = get_manifest(store, 1), get_manifest(store, 2)
    assert m1.archive_sha256 != m2.archive_sha256
    assert m2.message == "bigger layer"


def test_existing_version_number_is_refused_unless_forced(project: Path, store) -> None:
    migrate_code(project / "train.py", store, version=3)
    (project / "helpers.py").write_text("VALUE = 7\n")
    with pytest.raises(CodePackageError, match=r"version 3 already exists.*--force.*store it as 4"):
        migrate_code(project / "train.py", store, version=3)
    forced = migrate_code(project / "train.py", store, version=3, force=True)
    assert forced.replaced and forced.version == 3
    assert get_manifest(store, 3).file_map()["helpers.py"].size == len("VALUE = 7\n")
    assert migrate_code(project / "train.py", store).version == 3  # unchanged since


def test_next_free_number_follows_the_highest_even_a_half_written_one(project: Path, store) -> None:
    store.put(archive_key(5), b"interrupted upload, no manifest")
    assert list_versions(store) == []  # a version without manifest does not exist
    assert migrate_code(project / "train.py", store).version == 6


def test_size_guard_lists_the_biggest_files_and_the_way_out(
    project: Path, tmp_path: Path, write
) -> None:
    write(
        project, {"benchkit.toml": '[project]\nname = "demo"\n[code]\ninclude = ["assets/*.bin"]\n'}
    )
    (project / "assets").mkdir()
    (project / "assets" / "big.bin").write_bytes(b"\1" * 300_000)
    (project / "assets" / "small.bin").write_bytes(b"\1" * 1_000)
    with pytest.raises(CodePackageError) as e:
        build_package(project / "train.py", tmp_path, max_size="100KB")
    msg = str(e.value)
    assert "over the 100.0 KB limit" in msg
    assert "assets/big.bin" in msg and msg.index("assets/big.bin") < msg.index("assets/small.bin")
    assert "--max-size" in msg and ".benchkitignore" in msg
    pkg = build_package(project / "train.py", tmp_path, max_size="1MB")
    assert "assets/big.bin" in pkg.manifest.file_map()


def test_ignored_and_never_packaged_files_stay_out(project: Path, tmp_path: Path, write) -> None:
    write(
        project,
        {
            "benchkit.toml": '[project]\nname = "demo"\n[code]\ninclude = ["**/*.yaml", "**/*.pt"]\n',
            "configs/a.yaml": "lr: 1\n",
            "configs/secret.yaml": "key: x\n",
            ".gitignore": "secret.yaml\n",
            "weights/model.pt": "w",
            ".benchkitignore": "*.pt\n",
            ".venv/pyvenv.cfg": "",
            ".venv/lib/x.yaml": "",
            "data/raw/meta.yaml": "",
            "__pycache__/helpers.cpython-311.pyc": "",
        },
    )
    files = set(build_package(project / "train.py", tmp_path).manifest.file_map())
    assert "configs/a.yaml" in files
    assert not files & {
        "configs/secret.yaml",
        "weights/model.pt",
        ".venv/lib/x.yaml",
        "data/raw/meta.yaml",
    }
    assert not any("__pycache__" in f for f in files)


def test_requirements_come_from_requirements_txt_then_pyproject_then_imports(
    project: Path, tmp_path: Path
) -> None:
    m = build_package(project / "train.py", tmp_path).manifest
    assert m.requirements_source == "imports"
    assert {r.split("==")[0].lower() for r in m.requirements} == {"torch", "numpy"}
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["torch>=2", "rich"]\n'
    )
    m = build_package(project / "train.py", tmp_path).manifest
    assert (m.requirements_source, m.requirements) == ("pyproject.toml", ["torch>=2", "rich"])
    (project / "requirements.txt").write_text("# pinned\ntorch==2.1  # cpu\n\nnumpy\n")
    m = build_package(project / "train.py", tmp_path).manifest
    assert (m.requirements_source, m.requirements) == ("requirements.txt", ["torch==2.1", "numpy"])
    assert {"requirements.txt", "pyproject.toml"} <= set(m.file_map())


def test_missing_or_non_python_entry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CodePackageError, match="does not exist"):
        build_package(tmp_path / "nope.py", tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CodePackageError, match="not a Python file"):
        build_package(tmp_path / "notes.txt", tmp_path)


def test_a_store_inside_the_project_is_never_packaged(project: Path, write) -> None:
    from benchkit.store import LocalStore

    write(
        project,
        {
            "benchkit.toml": '[project]\nname = "demo"\n[code]\ninclude = ["**/*.json"]\n',
            "cfg.json": "{}",
        },
    )
    inner = LocalStore(project / "mystore")
    inner.put_json("datasets/train/index.json", {"chunks": []})
    result = migrate_code(project / "train.py", inner)
    files = set(result.manifest.file_map())
    assert "cfg.json" in files
    assert not [f for f in files if f.startswith("mystore/")]
    # and the version it just wrote does not change the next package
    assert migrate_code(project / "train.py", inner).created is False


def test_same_code_compressed_by_another_zlib_is_still_recognised(project: Path, store) -> None:
    import hashlib

    migrate_code(project / "train.py", store)
    # recompress the stored archive differently (as another zlib build might): other bytes,
    # same files; the version must still be found by its content and still pull cleanly
    path = store.local_path(archive_key(1))
    other = gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=0)
    assert other != path.read_bytes()
    store.put(archive_key(1), other)
    m = store.get_json(manifest_key(1))
    m["archive_sha256"] = hashlib.sha256(other).hexdigest()
    store.put_json(manifest_key(1), m)
    again = migrate_code(project / "train.py", store)
    assert (again.version, again.created) == (1, False)
