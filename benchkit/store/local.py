"""The embedded default store: a directory of plain files.

Large objects: ``put_file`` copies through an 8 MiB buffer into a temporary file and renames
it, and readers get the file's path (``local_path``) to memory-map, so nothing is ever held in
memory whole. Plain files beat tensorstore's ``file`` driver here by about 10x on large reads
(see shared/notes/TENSORSTORE.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from benchkit.errors import StoreError, StorePermissionError
from benchkit.fsutil import atomic_file, fsync_dir
from benchkit.store.base import COPY_BUFFER, ObjectInfo, Store, check_key, check_prefix


class LocalStore(Store):
    """Objects are files under ``root``; keys map to relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except PermissionError as e:
            raise StorePermissionError(
                f"cannot create the store directory {self.root}: {e.strerror}. "
                "Pick a writable directory with --store or BENCHKIT_STORE."
            ) from e
        except OSError as e:
            raise StoreError(f"cannot create the store directory {self.root}: {e}") from e

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _wrap(self, key: str, e: OSError) -> Exception:
        if isinstance(e, FileNotFoundError):
            return self.not_found(key)
        if isinstance(e, PermissionError):
            return StorePermissionError(
                f"permission denied on '{key}' in store {self.url}: check the directory's owner and mode"
            )
        if e.errno == errno.EROFS:
            return StorePermissionError(
                f"cannot write '{key}' to store {self.url}: its filesystem is mounted read-only"
            )
        if e.errno == errno.ENOSPC:
            return StoreError(
                f"no space left writing '{key}' to store {self.url}: free some disk space"
            )
        if isinstance(e, (IsADirectoryError, NotADirectoryError)):
            return self.not_found(key, "(that key is a prefix of other keys, not an object)")
        return StoreError(f"store {self.url}: '{key}': {e}")

    def _wrap_write(self, key: str, e: OSError) -> Exception:
        if isinstance(e, (NotADirectoryError, FileExistsError, IsADirectoryError)):
            # a directory store cannot hold both 'a' and 'a/b'
            return StoreError(
                f"cannot write '{key}' to store {self.url}: a key on its path is an object, or the "
                "key is a prefix of other keys; a directory store cannot hold both 'a' and 'a/b'"
            )
        return self._wrap(key, e)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(key)
        try:
            with atomic_file(path) as f:
                f.write(data)
        except OSError as e:
            raise self._wrap_write(key, e) from e

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Written to a temporary file, then hard-linked into place: ``link`` fails when the
        name exists, so of racing writers exactly one wins, and readers see whole files."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                fsync_dir(path.parent)
                return True
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise self._wrap_write(key, e) from e

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        dest = self._path(key)
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError as e:
            raise StoreError(f"cannot upload {path} to '{key}': the file does not exist") from e
        except OSError as e:
            raise StoreError(f"cannot upload {path} to '{key}' in store {self.url}: {e}") from e
        try:
            with src, atomic_file(dest) as out:
                shutil.copyfileobj(src, out, COPY_BUFFER)
        except OSError as e:
            raise self._wrap_write(key, e) from e

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as e:
            raise self._wrap(key, e) from e

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end}) for '{key}'")
        try:
            with open(self._path(key), "rb") as f:
                return os.pread(f.fileno(), end - start, start)
        except OSError as e:
            raise self._wrap(key, e) from e

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        if not path.is_file():
            raise self.not_found(key)
        return path

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except OSError as e:
            raise self._wrap(key, e) from e
        if not os.path.isfile(self._path(key)):
            raise self.not_found(key)
        return ObjectInfo(key, st.st_size)

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix fully names.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        if not top.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.startswith("."):
                    continue
                key = rel + name
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return False
        except OSError as e:
            raise self._wrap(key, e) from e
        self._prune(path.parent)
        return True

    def delete_prefix(self, prefix: str) -> int:
        n = super().delete_prefix(prefix)
        if prefix.endswith("/"):
            # also drops leftovers such as temporary files of killed writers
            shutil.rmtree(self.root / prefix.rstrip("/"), ignore_errors=True)
            self._prune((self.root / prefix.rstrip("/")).parent)
        return n

    def sweep_leftovers(self, prefix: str) -> int:
        """Remove hidden files and directories under ``prefix`` (temporary files of killed
        writers: ``atomic_file`` names them ``.<name>.<random>.tmp``)."""
        check_prefix(prefix)
        head, _, tail = prefix.rpartition("/")
        top = self.root / head if head else self.root
        if not top.is_dir():
            return 0
        removed = 0
        for dirpath, dirnames, filenames in os.walk(top):
            # in the prefix's own folder only names continuing the prefix are under it
            inside = (lambda n: n.lstrip(".").startswith(tail)) if dirpath == str(top) else None
            for name in filenames + dirnames:
                if not name.startswith(".") or (inside and not inside(name)):
                    continue
                path = os.path.join(dirpath, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
                        os.unlink(path)
                removed += 1
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and (not inside or inside(d))
            ]
        return removed

    def _prune(self, directory: Path) -> None:
        """Remove empty directories up to the root, so listings stay clean."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
