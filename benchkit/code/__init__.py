"""Code migration: versioned, reproducible packages of a project's code (``code/<N>/`` in the store)."""

from __future__ import annotations

from benchkit.code.package import (
    DEFAULT_MAX_SIZE,
    EMBEDDED_MANIFEST,
    CodePackage,
    FileEntry,
    Manifest,
    MigrateResult,
    VersionDiff,
    build_package,
    checkout,
    collect_files,
    delete_version,
    diff_versions,
    get_manifest,
    list_versions,
    migrate_code,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "EMBEDDED_MANIFEST",
    "CodePackage",
    "FileEntry",
    "Manifest",
    "MigrateResult",
    "VersionDiff",
    "build_package",
    "checkout",
    "collect_files",
    "delete_version",
    "diff_versions",
    "get_manifest",
    "list_versions",
    "migrate_code",
]
