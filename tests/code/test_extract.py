"""Pulling versions: safe extraction of crafted archives, checksums, overwrite refusal."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from benchkit.code import EMBEDDED_MANIFEST, checkout, get_manifest, migrate_code
from benchkit.code.package import archive_key, manifest_key
from benchkit.errors import CodePackageError


def crafted(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def plant(store, version: int, archive: bytes, extra_files: dict[str, bytes] | None = None) -> None:
    """Replace a stored version's archive, and make its manifest agree with the archive's sha256
    (and list ``extra_files``), so only the member checks stand between it and the disk."""
    store.put(archive_key(version), archive)
    m = store.get_json(manifest_key(version))
    m["archive_sha256"] = hashlib.sha256(archive).hexdigest()
    for name, data in (extra_files or {}).items():
        m["files"].append(
            {
                "path": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "executable": False,
            }
        )
    store.put_json(manifest_key(version), m)


@pytest.fixture
def stored(project: Path, store):
    migrate_code(project / "train.py", store)
    return store


def test_pull_restores_every_file_and_the_entry_module_runs(
    stored, project: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dest = tmp_path / "pulled"
    manifest = checkout(stored, 1, dest)
    for f in manifest.files:
        assert (dest / f.path).read_bytes() == (project / f.path).read_bytes()
    assert (dest / EMBEDDED_MANIFEST).is_file()
    assert not (dest / "unused.py").exists()
    # the package is self-contained: the entry module's local imports resolve in the fresh dir
    stub = tmp_path / "stubs"
    stub.mkdir()
    (stub / "torch.py").write_text("")  # keep the check fast: the real torch is not needed here
    (stub / "numpy.py").write_text("")
    out = subprocess.run(
        [sys.executable, manifest.entry_point],
        cwd=dest,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(stub), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip() == "42"


@pytest.mark.parametrize(
    ("evil", "message"),
    [
        ((member("/etc/evil.py"), b"x"), "absolute path"),
        ((member("../evil.py"), b"x"), r"'\.\.'"),
        ((member("models/../../evil.py"), b"x"), r"'\.\.'"),
        ((member("link.py", tarfile.SYMTYPE, "/etc/passwd"), None), "symbolic link.*outside"),
        (
            (member("models/link.py", tarfile.SYMTYPE, "../../outside.py"), None),
            "symbolic link.*outside",
        ),
        ((member("hard.py", tarfile.LNKTYPE, "/etc/passwd"), None), "hard link"),
        ((member("dev.py", tarfile.CHRTYPE), None), "device"),
        ((member("blk.py", tarfile.BLKTYPE), None), "device"),
        ((member("fifo.py", tarfile.FIFOTYPE), None), "device"),
    ],
)
def test_crafted_archives_are_refused_and_write_nothing(
    stored, tmp_path: Path, evil, message: str
) -> None:
    info, data = evil
    good = [(member("train.py"), b"print(1)\n")]
    plant(stored, 1, crafted([*good, (info, data)]), {info.name: data or b""})
    dest = tmp_path / "dest"
    with pytest.raises(CodePackageError, match=message):
        checkout(stored, 1, dest)
    assert not (tmp_path / "evil.py").exists() and not Path("/etc/evil.py").exists()
    assert not (dest / "train.py").exists()
    assert [p.name for p in dest.iterdir()] == [] if dest.exists() else True


def test_member_not_in_the_manifest_is_refused(stored, tmp_path: Path) -> None:
    with tarfile.open(fileobj=gzip.open(stored.local_path(archive_key(1)))) as tar:
        real = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    plant(stored, 1, crafted([*real, (member("sneaky.py"), b"import os\n")]))
    with pytest.raises(CodePackageError, match="sneaky.py.*not listed in the manifest"):
        checkout(stored, 1, tmp_path / "dest")


def test_tampered_archive_fails_its_checksum(stored, tmp_path: Path) -> None:
    path = stored.local_path(archive_key(1))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.put(archive_key(1), bytes(data))
    with pytest.raises(CodePackageError, match="sha256.*damaged or was altered"):
        checkout(stored, 1, tmp_path / "dest")
    assert not (tmp_path / "dest" / "train.py").exists()


def test_altered_file_with_a_matching_archive_checksum_fails_the_file_checksum(
    stored, tmp_path: Path
) -> None:
    # rebuild the archive with one file's content changed (same size), and fix only the
    # archive's sha256 in the manifest: the per-file sha256 must catch it
    with tarfile.open(fileobj=gzip.open(stored.local_path(archive_key(1)))) as tar:
        real = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    altered = [(m, b"VALUE = 66 + 1\n" if m.name == "helpers.py" else d) for m, d in real]
    plant(stored, 1, crafted(altered))
    with pytest.raises(CodePackageError, match="helpers.py has sha256.*altered"):
        checkout(stored, 1, tmp_path / "dest")
    assert not (tmp_path / "dest" / "train.py").exists()


def test_pull_refuses_to_overwrite_unless_forced(stored, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "helpers.py").write_text("mine\n")
    (dest / "other.txt").write_text("untouched\n")
    with pytest.raises(CodePackageError, match="already exist.*helpers.py.*--force"):
        checkout(stored, 1, dest)
    assert (dest / "helpers.py").read_text() == "mine\n" and not (dest / "train.py").exists()
    checkout(stored, 1, dest, force=True)
    assert (dest / "helpers.py").read_text() == "VALUE = 41 + 1\n"
    assert (dest / "other.txt").read_text() == "untouched\n"
    assert not [p for p in dest.iterdir() if p.name.startswith(".benchkit-pull")]


def test_missing_version_and_missing_archive_are_clear_errors(stored, tmp_path: Path) -> None:
    with pytest.raises(CodePackageError, match="code version 9 does not exist.*versions list"):
        checkout(stored, 9, tmp_path / "d")
    stored.delete(archive_key(1))
    with pytest.raises(CodePackageError, match="has a manifest but no archive"):
        checkout(stored, 1, tmp_path / "d")
    assert get_manifest(stored, 1).version == 1


def test_pull_refuses_paths_blocked_by_files_or_directories(stored, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "models").write_text("a file where a package directory goes\n")
    with pytest.raises(CodePackageError, match=r"models/__init__.py \(models is a file\)"):
        checkout(stored, 1, dest, force=True)
    (dest / "models").unlink()
    (dest / "helpers.py").mkdir()
    with pytest.raises(CodePackageError, match=r"helpers.py \(a directory is in the way\)"):
        checkout(stored, 1, dest, force=True)
    assert not (dest / "train.py").exists()
