"""Reproducible ``.tar.gz`` archives of project files, and their safe extraction.

Writing: entries sorted, every header fixed (mtime 0, uid/gid 0, no owner names, mode 0644 or
0755 for executables), gzip header without file name or time, so the same files always give the
same bytes. Reading: every member is checked before anything is written (regular files and
directories only, relative paths without ``..``, listed in the manifest with the right size),
extraction uses tarfile's ``data`` filter into a staging directory, every file's sha256 is
verified, and only then are files moved into place.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from benchkit.errors import CodePackageError
from benchkit.fsutil import sha256_file


def _info(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing it, so what goes into the archive is what was checked."""

    def __init__(self, f: io.BufferedReader) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def write_archive(
    dest: Path,
    root: Path,
    files: Iterable[tuple[str, str, int, bool]],
    extra: Mapping[str, bytes] | None = None,
) -> None:
    """Write ``dest``: ``extra`` members (name -> bytes) first, then ``files`` given as
    (relative path, expected sha256, size, executable), all sorted by name."""
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in sorted((extra or {}).items()):
            tar.addfile(_info(name, len(data), False), io.BytesIO(data))
        for rel, digest, size, executable in sorted(files):
            path = root / rel
            try:
                with open(path, "rb") as f:
                    if os.fstat(f.fileno()).st_size != size:
                        raise _changed(path)
                    reader = _HashingReader(f)
                    tar.addfile(_info(rel, size, executable), reader)
            except OSError as e:
                raise CodePackageError(f"cannot read {path} while packaging: {e}") from e
            if reader.h.hexdigest() != digest:
                raise _changed(path)


def _changed(path: Path) -> CodePackageError:
    return CodePackageError(f"{path} changed while it was being packaged; run the command again")


def _check_member(m: tarfile.TarInfo, archive: str) -> str:
    """The member's normalised name, or an error saying why it may not be extracted."""
    name = m.name
    where = f"code archive {archive}: member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or os.path.isabs(name):
        raise CodePackageError(f"{where} has an absolute path; the archive is not safe to extract")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise CodePackageError(
            f"{where} leaves the destination with '..'; the archive is not safe to extract"
        )
    if m.issym() or m.islnk():
        target = m.linkname
        base = posixpath.dirname(name) if m.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        outside = target.startswith("/") or resolved == ".." or resolved.startswith("../")
        kind = "symbolic link" if m.issym() else "hard link"
        raise CodePackageError(
            f"{where} is a {kind} to {target!r}"
            + (" (outside the destination)" if outside else "")
            + "; code packages hold regular files only, so the archive is not safe to extract"
        )
    if m.ischr() or m.isblk() or m.isfifo() or not (m.isreg() or m.isdir()):
        raise CodePackageError(
            f"{where} is a device or special file; code packages hold regular files only, "
            "so the archive is not safe to extract"
        )
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm in ("", "."):
        raise CodePackageError(f"{where} has an empty path")
    return norm


def check_members(
    tar: tarfile.TarFile, archive: str, expected: Mapping[str, int]
) -> list[tarfile.TarInfo]:
    """Validate every member against safety rules and the expected files (name -> size)."""
    members = tar.getmembers()
    names = [_check_member(m, archive) for m in members]  # every member is safe, first
    seen: set[str] = set()
    files: list[tarfile.TarInfo] = []
    for m, norm in zip(members, names, strict=True):
        if m.isdir():
            continue
        if norm in seen:
            raise CodePackageError(f"code archive {archive}: member {norm!r} appears twice")
        seen.add(norm)
        if norm not in expected:
            raise CodePackageError(
                f"code archive {archive}: member {norm!r} is not listed in the manifest; "
                "the archive was altered"
            )
        if m.size != expected[norm]:
            raise CodePackageError(
                f"code archive {archive}: {norm!r} is {m.size} bytes, the manifest says "
                f"{expected[norm]}; the archive was altered"
            )
        files.append(m)
    missing = sorted(set(expected) - seen)
    if missing:
        raise CodePackageError(
            f"code archive {archive} lacks {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + " listed in the manifest"
        )
    return files


def safe_extract(
    archive: Path,
    dest: Path,
    expected: Mapping[str, tuple[str, int]],
    *,
    label: str,
    force: bool = False,
) -> list[str]:
    """Extract ``archive`` into ``dest`` after checking it; ``expected`` maps each file to
    (sha256, size). Existing files are never overwritten unless ``force``. Returns the files."""
    dest = Path(dest)
    clash = [rel for rel in sorted(expected) if (dest / rel).exists() or (dest / rel).is_symlink()]
    if clash and not force:
        raise CodePackageError(
            f"{len(clash)} file(s) of {label} already exist in {dest} "
            f"({', '.join(clash[:5])}{', ...' if len(clash) > 5 else ''}); "
            "pass --force to overwrite them, or pull into another directory with --dest"
        )
    if dest.exists() and not dest.is_dir():
        raise CodePackageError(f"cannot pull {label} into {dest}: it is a file, not a directory")
    blocked = sorted(
        {
            f"{rel} ({parent.relative_to(dest)} is a file)"
            for rel in expected
            for parent in (dest / rel).parents
            if dest in parent.parents and (parent.is_file() or parent.is_symlink())
        }
        | {f"{rel} (a directory is in the way)" for rel in expected if (dest / rel).is_dir()}
    )
    if blocked:
        raise CodePackageError(
            f"cannot pull {label} into {dest}: {', '.join(blocked[:5])}; pull into another "
            "directory with --dest"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".benchkit-pull-", dir=dest))
    except OSError as e:
        raise CodePackageError(f"cannot pull {label} into {dest}: {e}") from e
    try:
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                members = check_members(tar, label, {k: v[1] for k, v in expected.items()})
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # Python without the filter: the checks above already refuse unsafe members
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
            raise CodePackageError(
                f"{label} is not a readable archive ({e}); the archive is damaged"
            ) from e
        for rel, (digest, _size) in expected.items():
            got = sha256_file(staging / rel)
            if got != digest:
                raise CodePackageError(
                    f"{label}: {rel} has sha256 {got[:12]}…, the manifest says {digest[:12]}…; "
                    "the archive was altered, nothing was written"
                )
        for rel in sorted(expected):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                raise CodePackageError(
                    f"cannot pull {rel} into {dest}: a directory of that name is in the way"
                )
            os.replace(staging / rel, target)
            os.utime(target)  # fresh mtimes, so no stale __pycache__ entry looks current
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(expected)
