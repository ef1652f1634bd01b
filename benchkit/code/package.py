"""Versioned, reproducible code packages: build, store, list, pull, delete, diff.

A package holds the entry module, the project-local modules it imports (transitively),
``benchkit.toml``, ``requirements.txt`` / ``pyproject.toml``, files matched by the optional
``include`` list of the ``[code]`` table in ``benchkit.toml``, and ``benchkit-manifest.json``
(entry point, requirements, Python/torch/accelerate/BenchKit versions, every file's sha256 and
size). The archive holds nothing that changes between two runs over the same files, so the
same code always gives the same sha256 and re-migrating it stores nothing new.

Store layout, per version ``N``: ``code/N/claim.json`` (created only if absent: of two
``migrate code`` runs racing for ``N``, one gets it and the other takes the next number), then
``code/N/code.tar.gz``, then ``code/N/manifest.json`` (the embedded manifest plus the version,
creation time, message, project and the archive's sha256 and size). The manifest is written
last, so a version is whole or absent.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit._version import __version__
from benchkit.code.archive import safe_extract, write_archive
from benchkit.code.ignore import ProjectFiles, glob_matcher
from benchkit.code.imports import distributions_for, scan_imports
from benchkit.errors import CodePackageError, ConfigError, ObjectNotFound
from benchkit.fsutil import sha256_file
from benchkit.registry import user_module_path
from benchkit.settings import PROJECT_FILE, find_project_file
from benchkit.store import LocalStore, Store, open_store
from benchkit.units import human_bytes, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PREFIX = "code/"
ARCHIVE_NAME = "code.tar.gz"
MANIFEST_NAME = "manifest.json"
CLAIM_NAME = "claim.json"
#: The manifest's name inside the archive (and in a pulled directory).
EMBEDDED_MANIFEST = "benchkit-manifest.json"
#: Project files that travel with the code when present at the root.
PROJECT_FILES = (PROJECT_FILE, "requirements.txt", "pyproject.toml")
DEFAULT_MAX_SIZE = 50_000_000
DEFAULT_ENTRIES = ("train.py", "TrainScript.py")


# --- the manifest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One packaged file."""

    path: str
    sha256: str
    size: int
    executable: bool = False


@dataclass
class Manifest:
    """What a code version holds and what it needs to run.

    The fields down to ``format`` are inside the archive (so they are part of its checksum);
    the rest is metadata about the stored version.
    """

    entry_point: str
    files: list[FileEntry]
    requirements: list[str]
    requirements_source: str
    python: str
    torch: str | None
    accelerate: str | None
    benchkit: str
    unresolved_imports: list[str] = field(default_factory=list)
    format: int = FORMAT_VERSION
    # stored metadata
    version: int | None = None
    created: str | None = None
    message: str = ""
    project: str | None = None
    archive_sha256: str = ""
    archive_size: int = 0
    #: sha256 of the embedded manifest, which lists every file's sha256: equal code gives an
    #: equal value even where another zlib would compress the archive to other bytes
    content_sha256: str = ""

    ARCHIVE_FIELDS = (
        "entry_point", "files", "requirements", "requirements_source", "python", "torch",
        "accelerate", "benchkit", "unresolved_imports", "format",
    )  # fmt: skip

    @property
    def total_size(self) -> int:
        """Bytes of all packaged files, uncompressed."""
        return sum(f.size for f in self.files)

    def file_map(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    def to_dict(self, archive_only: bool = False) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if archive_only:
            d = {k: d[k] for k in self.ARCHIVE_FIELDS}
        return d

    def archive_bytes(self) -> bytes:
        """The manifest as stored inside the archive (deterministic)."""
        return (
            json.dumps(self.to_dict(archive_only=True), indent=1, sort_keys=True) + "\n"
        ).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in d.items() if k in known}
            values["files"] = [FileEntry(**f) for f in d["files"]]
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise CodePackageError(f"{where} is not a valid code manifest ({e})") from e


@dataclass
class CodePackage:
    """A built package waiting in a local file."""

    root: Path
    archive: Path
    manifest: Manifest


# --- building ---------------------------------------------------------------------------------


def project_root_for(module: Path) -> Path:
    """The directory of the nearest ``benchkit.toml`` above ``module``, else its directory."""
    found = find_project_file(module.parent)
    return found.parent if found else module.parent


def _code_config(root: Path) -> dict[str, Any]:
    path = root / PROJECT_FILE
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("code", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"project file {path} is not valid TOML: {e}") from e
    if not isinstance(table, dict):
        raise ConfigError(f"project file {path}: [code] must be a table")
    include = table.get("include", [])
    if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
        raise ConfigError(
            f'project file {path}: [code] include must be a list of patterns, e.g. ["configs/*.yaml"]'
        )
    return table


def _read_requirements(root: Path, files: set[str]) -> tuple[list[str], str] | None:
    req = root / "requirements.txt"
    if "requirements.txt" in files and req.is_file():
        lines = []
        for line in req.read_text().splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
        return lines, "requirements.txt"
    pyproject = root / "pyproject.toml"
    if "pyproject.toml" in files and pyproject.is_file():
        try:
            with open(pyproject, "rb") as f:
                deps = tomllib.load(f).get("project", {}).get("dependencies")
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{pyproject} is not valid TOML: {e}") from e
        if isinstance(deps, list):
            return [str(d) for d in deps], "pyproject.toml"
    return None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_files(
    module: Path, root: Path | None = None, exclude_dirs: Iterable[str | os.PathLike[str]] = ()
) -> tuple[Path, str, list[str], list[str]]:
    """Choose the files of a package: (root, entry point, files, third-party import names).

    ``exclude_dirs`` are left out on top of the ignore rules (a local store inside the project).
    """
    module = user_module_path(module, CodePackageError)
    root = Path(root).resolve() if root else project_root_for(module)
    entry = module.relative_to(root).as_posix()
    rules = ProjectFiles(root, exclude_dirs)
    reason = rules.excluded(entry)
    if reason:
        raise CodePackageError(f"the entry module {entry} cannot be packaged: {reason}")
    scan = scan_imports(module, root)
    for miss in scan.missing:
        log.warning("relative import not found in the project: %s", miss)
    chosen: set[str] = set()
    for rel in sorted(scan.local):
        reason = rules.excluded(rel)
        if reason:
            log.warning("%s is imported but left out of the package: %s", rel, reason)
            continue
        chosen.add(rel)
    for name in PROJECT_FILES:
        if (root / name).is_file() and rules.excluded(name) is None:
            chosen.add(name)
    include = _code_config(root).get("include", [])
    if include:
        matchers = [(p, glob_matcher(p)) for p in include]
        candidates = rules.walk()
        for pattern, rx in matchers:
            hits = [rel for rel in candidates if rx.fullmatch(rel)]
            if not hits:
                log.warning(
                    "[code] include pattern %r in %s matches no file", pattern, root / PROJECT_FILE
                )
            chosen.update(hits)
    chosen.discard(EMBEDDED_MANIFEST)
    return root, entry, sorted(chosen), sorted(scan.third_party)


def _size_guard(root: Path, files: list[tuple[str, int]], max_size: int) -> None:
    total = sum(size for _, size in files)
    if total <= max_size:
        return
    biggest = sorted(files, key=lambda t: (-t[1], t[0]))[:10]
    lines = "\n".join(f"  {human_bytes(size):>10}  {rel}" for rel, size in biggest)
    raise CodePackageError(
        f"the code package of {root} would be {human_bytes(total)} ({len(files)} files), over the "
        f"{human_bytes(max_size)} limit. Biggest files:\n{lines}\n"
        "Leave them out with a .benchkitignore, or include them on purpose with "
        f"--max-size {human_bytes(total * 1.1).replace(' ', '')} (migrate datasets with "
        "`benchkit migrate data`, not with the code)"
    )


def build_package(
    module: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    max_size: int | str = DEFAULT_MAX_SIZE,
    exclude_dirs: Iterable[str | os.PathLike[str]] = (),
) -> CodePackage:
    """Package ``module`` into ``workdir/code.tar.gz``; the same files give the same bytes."""
    root_path, entry, rels, third_party = collect_files(
        Path(module), Path(root) if root else None, exclude_dirs
    )
    limit = parse_size(max_size)
    stats: list[tuple[str, int, bool]] = []
    for rel in rels:
        try:
            st = (root_path / rel).stat()
        except OSError as e:
            raise CodePackageError(f"cannot read {root_path / rel} while packaging: {e}") from e
        stats.append((rel, st.st_size, bool(st.st_mode & 0o100)))
    _size_guard(root_path, [(r, s) for r, s, _ in stats], limit)
    entries = [FileEntry(rel, sha256_file(root_path / rel), size, exe) for rel, size, exe in stats]
    declared = _read_requirements(root_path, set(rels))
    unresolved: list[str] = []
    if declared:
        requirements, source = declared
    else:
        requirements, unresolved = distributions_for(third_party)
        source = "imports"
        for name in unresolved:
            log.warning("%s is imported but no installed distribution provides it", name)
    manifest = Manifest(
        entry_point=entry,
        files=entries,
        requirements=requirements,
        requirements_source=source,
        python=platform.python_version(),
        torch=_dist_version("torch"),
        accelerate=_dist_version("accelerate"),
        benchkit=__version__,
        unresolved_imports=unresolved,
    )
    archive = Path(workdir) / ARCHIVE_NAME
    write_archive(
        archive,
        root_path,
        [(e.path, e.sha256, e.size, e.executable) for e in entries],
        {EMBEDDED_MANIFEST: manifest.archive_bytes()},
    )
    manifest.archive_sha256 = sha256_file(archive)
    manifest.content_sha256 = hashlib.sha256(manifest.archive_bytes()).hexdigest()
    manifest.archive_size = archive.stat().st_size
    return CodePackage(root_path, archive, manifest)


# --- the store --------------------------------------------------------------------------------


def archive_key(version: int) -> str:
    return f"{PREFIX}{version}/{ARCHIVE_NAME}"


def manifest_key(version: int) -> str:
    return f"{PREFIX}{version}/{MANIFEST_NAME}"


def _stored_numbers(store: Store) -> list[int]:
    """Every version number with anything stored under it (whole or not)."""
    return sorted(int(n) for n in store.list_dirs(PREFIX) if n.isdigit())


def get_manifest(store: Store | str | None, version: int) -> Manifest:
    """The manifest of one stored version; :class:`CodePackageError` when there is none."""
    store = open_store(store)
    try:
        data = store.get_json(manifest_key(version))
    except ObjectNotFound:
        raise CodePackageError(
            f"code version {version} does not exist in store {store.url}; "
            "see the stored ones with `benchkit versions list`"
        ) from None
    except ValueError as e:
        raise CodePackageError(
            f"the manifest of code version {version} in store {store.url} is not JSON: {e}"
        ) from e
    return Manifest.from_dict(data, f"the manifest of code version {version} in store {store.url}")


def list_versions(store: Store | str | None) -> list[Manifest]:
    """The whole versions in a store, oldest number first (half-written ones are skipped)."""
    store = open_store(store)
    catalog = store.catalog()
    if catalog is not None:
        return [
            Manifest.from_dict(m, f"code version {m.get('version')}") for m in catalog.versions()
        ]
    found = []
    for n in _stored_numbers(store):
        if store.exists(manifest_key(n)):
            found.append(get_manifest(store, n))
        else:
            log.info(
                "code/%d/ in %s has no manifest (an interrupted upload); skipped", n, store.url
            )
    return found


@dataclass
class MigrateResult:
    """What ``migrate_code`` did."""

    version: int
    created: bool  # False when an existing version already held the same archive
    manifest: Manifest
    replaced: bool = False


def migrate_code(
    module: str | os.PathLike[str],
    store: Store | str | None = None,
    *,
    version: int | None = None,
    message: str = "",
    force: bool = False,
    max_size: int | str = DEFAULT_MAX_SIZE,
    project: str | None = None,
) -> MigrateResult:
    """Package ``module`` and store it as a new code version (unless identical code is stored)."""
    store = open_store(store)
    if version is not None and version < 1:
        raise CodePackageError(f"code versions are numbered from 1, got {version}")
    with tempfile.TemporaryDirectory(prefix="benchkit-code-") as tmp:
        # a store directory inside the project holds data, never code
        in_project = [store.root] if isinstance(store, LocalStore) else []
        pkg = build_package(module, tmp, max_size=max_size, exclude_dirs=in_project)
        manifest = pkg.manifest
        existing = list_versions(store)
        same = [
            m
            for m in existing
            if m.archive_sha256 == manifest.archive_sha256
            or (m.content_sha256 and m.content_sha256 == manifest.content_sha256)
        ]
        if same and not force:
            held = same[0]
            return MigrateResult(held.version or 0, False, held)
        numbers = {m.version for m in existing}
        replaced = False
        if version is None:
            version = _claim_next(store, max(_stored_numbers(store), default=0) + 1)
        elif not _claim(store, version) and version not in numbers and not force:
            raise CodePackageError(
                f"code version {version} is being written by another `migrate code` (or one "
                f"was interrupted) in store {store.url}; leave out --version to store the next "
                f"free number, or pass --force to take {version} over"
            )
        elif version in numbers:
            if not force:
                old = next(m for m in existing if m.version == version)
                nxt = max(_stored_numbers(store), default=0) + 1
                raise CodePackageError(
                    f"code version {version} already exists in store {store.url} "
                    f"(created {old.created}{', ' + repr(old.message) if old.message else ''}); "
                    f"pass --force to replace it, or leave out --version to store it as {nxt}"
                )
            replaced = True
            store.delete(manifest_key(version))  # the version is absent until rewritten whole
        manifest.version = version
        manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest.message = message
        manifest.project = project
        store.put_file(archive_key(version), pkg.archive)
        store.put_json(manifest_key(version), manifest.to_dict())
    return MigrateResult(version, True, manifest, replaced)


#: most version numbers tried by one ``migrate code`` before it gives up
MAX_CLAIMS = 1000


def claim_key(version: int) -> str:
    """``code/N/claim.json``: created (only if absent) before anything else of version N, and
    kept, so two ``migrate code`` runs racing for a number never both get it."""
    return f"{PREFIX}{version}/{CLAIM_NAME}"


def _claim(store: Store, version: int) -> bool:
    claim = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "pid": os.getpid(),
    }
    return store.put_if_absent(claim_key(version), json.dumps(claim, sort_keys=True).encode())


def _claim_next(store: Store, first: int) -> int:
    """The first version number from ``first`` on that this process could claim."""
    for version in range(first, first + MAX_CLAIMS):
        if _claim(store, version):
            return version
    raise CodePackageError(
        f"could not claim a code version number in store {store.url} after {MAX_CLAIMS} tries "
        f"from {first}; is another process creating versions in a loop?"
    )


def _download_archive(store: Store, manifest: Manifest, tmpdir: Path) -> Path:
    version = manifest.version
    local = tmpdir / ARCHIVE_NAME
    try:
        store.get_file(archive_key(version), local)  # type: ignore[arg-type]
    except ObjectNotFound:
        raise CodePackageError(
            f"code version {version} in store {store.url} has a manifest but no archive; "
            f"delete it with `benchkit versions delete {version}` and migrate again"
        ) from None
    digest = sha256_file(local)
    if digest != manifest.archive_sha256:
        raise CodePackageError(
            f"the archive of code version {version} in store {store.url} has sha256 {digest[:12]}…, "
            f"its manifest says {manifest.archive_sha256[:12]}…; the archive is damaged or was "
            "altered: nothing was extracted"
        )
    return local


def checkout(
    store: Store | str | None, version: int, dest: str | os.PathLike[str], *, force: bool = False
) -> Manifest:
    """Extract code version ``version`` into ``dest`` after verifying every checksum.

    Existing files are never overwritten unless ``force``. The entry module is then
    ``dest / manifest.entry_point``.
    """
    store = open_store(store)
    manifest = get_manifest(store, version)
    expected = {f.path: (f.sha256, f.size) for f in manifest.files}
    embedded = manifest.archive_bytes()
    expected[EMBEDDED_MANIFEST] = (hashlib.sha256(embedded).hexdigest(), len(embedded))
    label = f"code version {version} (store {store.url})"
    with tempfile.TemporaryDirectory(prefix="benchkit-pull-") as tmp:
        local = _download_archive(store, manifest, Path(tmp))
        safe_extract(local, Path(dest), expected, label=label, force=force)
    return manifest


def delete_version(store: Store | str | None, version: int) -> int:
    """Delete a version (manifest first, so it vanishes whole); returns the objects removed."""
    store = open_store(store)
    if version not in _stored_numbers(store):
        raise CodePackageError(
            f"code version {version} does not exist in store {store.url}; "
            "see the stored ones with `benchkit versions list`"
        )
    removed = int(store.delete(manifest_key(version)))
    return removed + store.delete_prefix(f"{PREFIX}{version}/")


@dataclass
class VersionDiff:
    """Files added, removed and changed from version ``a`` to version ``b``."""

    a: int
    b: int
    added: list[str]
    removed: list[str]
    changed: list[str]
    requirements_added: list[str]
    requirements_removed: list[str]
    entry_point: tuple[str, str]

    @property
    def same(self) -> bool:
        return (
            not (
                self.added
                or self.removed
                or self.changed
                or self.requirements_added
                or self.requirements_removed
            )
            and self.entry_point[0] == self.entry_point[1]
        )


def diff_versions(store: Store | str | None, a: int, b: int) -> VersionDiff:
    """Compare two stored versions by their manifests (no download)."""
    store = open_store(store)
    ma, mb = get_manifest(store, a), get_manifest(store, b)
    fa, fb = ma.file_map(), mb.file_map()
    ra, rb = set(ma.requirements), set(mb.requirements)
    return VersionDiff(
        a,
        b,
        added=sorted(set(fb) - set(fa)),
        removed=sorted(set(fa) - set(fb)),
        changed=sorted(p for p in set(fa) & set(fb) if fa[p].sha256 != fb[p].sha256),
        requirements_added=sorted(rb - ra),
        requirements_removed=sorted(ra - rb),
        entry_point=(ma.entry_point, mb.entry_point),
    )


def default_entry(start: str | os.PathLike[str] | None = None) -> Path:
    """The module to package when none is given: ``train.py`` or ``TrainScript.py`` in the
    current directory or the project root."""
    here = Path(start or os.getcwd()).resolve()
    project = find_project_file(here)
    dirs = [here] + ([project.parent] if project and project.parent != here else [])
    for d in dirs:
        for name in DEFAULT_ENTRIES:
            if (d / name).is_file():
                return d / name
    raise CodePackageError(
        f"no {' or '.join(DEFAULT_ENTRIES)} in {here}; give the module to package, "
        "e.g. `benchkit migrate code train.py`"
    )
