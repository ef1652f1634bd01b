"""Find the project-local modules a Python file needs, by reading its imports with ``ast``.

Nothing is imported or run. Absolute imports are looked up the way Python would on the remote
machine: in the entry module's directory, then in the project root. Regular packages and
modules found there are local (their ``__init__.py`` files come along); a bare directory without
``__init__.py`` is a namespace package only when no installed distribution provides that name.
Relative imports are resolved against the importing file's directory. Literal
``importlib.import_module("x")`` and ``__import__("x")`` calls count as imports too.
Whatever is neither local, standard library nor BenchKit is a third-party import.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.errors import CodePackageError

log = logging.getLogger(__name__)

#: Names that are neither local nor third-party requirements.
BUILTIN_NAMES = (
    frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {"benchkit"}
)


@dataclass
class ImportScan:
    """What a module and the local modules it imports (transitively) need."""

    #: local module files, relative posix paths under the root (package ``__init__.py`` included)
    local: set[str] = field(default_factory=set)
    #: top-level names of third-party imports
    third_party: set[str] = field(default_factory=set)
    #: relative imports that point at nothing in the project, as "file: import"
    missing: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def installed_top_level_names() -> dict[str, list[str]]:
    """Top-level import name -> the installed distributions providing it."""
    return dict(importlib.metadata.packages_distributions())


def _imported_names(tree: ast.AST) -> Iterator[tuple[int, str | None, list[str]]]:
    """Yield (level, module, names) for each import: ``import a.b`` gives (0, "a.b", [])."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module, [a.name for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            arg = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and not arg.value.startswith(".")
            ):
                yield 0, arg.value, []


class _Resolver:
    def __init__(self, root: Path, search_dirs: Iterable[Path]) -> None:
        self.root = root
        self.search_dirs = list(dict.fromkeys(d.resolve() for d in search_dirs))

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def resolve_in(self, base: Path, parts: list[str], namespace_ok: bool) -> list[Path] | None:
        """Files making up ``parts`` below ``base``: the package ``__init__.py`` files on the way
        and the module itself. None when the first part is not there."""
        files: list[Path] = []
        here = base
        for i, part in enumerate(parts):
            pkg, mod = here / part, here / f"{part}.py"
            if (pkg / "__init__.py").is_file():
                files.append(pkg / "__init__.py")
                here = pkg
            elif mod.is_file():
                files.append(mod)
                break  # anything after a module is an attribute
            elif pkg.is_dir() and (namespace_ok or i > 0):
                here = pkg  # namespace package
            else:
                return files if i > 0 else None
        return files

    def absolute(self, name: str) -> list[Path] | None:
        parts = name.split(".")
        for namespace_ok in (False, True):
            if namespace_ok and parts[0] in installed_top_level_names():
                return None  # a bare directory loses to an installed package, as in Python
            for d in self.search_dirs:
                found = self.resolve_in(d, parts, namespace_ok)
                if found is not None:
                    return found
        return None


def scan_imports(entry: Path, root: Path, search_dirs: Iterable[Path] | None = None) -> ImportScan:
    """Follow the imports of ``entry`` transitively within ``root``."""
    entry, root = entry.resolve(), root.resolve()
    resolver = _Resolver(root, search_dirs or [entry.parent, root])
    scan = ImportScan()
    queue = [entry]
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            path.relative_to(root)
        except ValueError:
            continue  # outside the project: not ours to package
        scan.local.add(resolver.rel(path))
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as e:
            raise CodePackageError(
                f"{path}:{e.lineno}: syntax error ({e.msg}); fix it before packaging the code"
            ) from e
        except OSError as e:
            raise CodePackageError(f"cannot read {path}: {e}") from e
        for level, module, names in _imported_names(tree):
            if level:
                base = path.parent
                for _ in range(level - 1):
                    base = base.parent
                mod_parts = module.split(".") if module else []
                found = resolver.resolve_in(base, mod_parts, True) if mod_parts else []
                if found is None:
                    scan.missing.append(
                        f"{resolver.rel(path)}: from {'.' * level}{module} import ..."
                    )
                    continue
                if (base / "__init__.py").is_file():
                    found.append(base / "__init__.py")
                pkg_dir = base.joinpath(*mod_parts)
                for n in names:  # `from . import sub` names submodules
                    sub = resolver.resolve_in(pkg_dir, [n], False) if pkg_dir.is_dir() else None
                    found += sub or []
                queue += found
                continue
            if not module:
                continue
            found = resolver.absolute(module)
            if found is None:
                top = module.split(".")[0]
                if top not in BUILTIN_NAMES:
                    scan.third_party.add(top)
                continue
            for n in names:
                sub = resolver.absolute(f"{module}.{n}")
                if sub:
                    found += sub
            queue += found
    return scan


def distributions_for(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Pinned requirements (``dist==version``) for top-level import names, and the names no
    installed distribution provides."""
    mapping = installed_top_level_names()
    reqs: set[str] = set()
    unknown: list[str] = []
    for name in sorted(set(names)):
        dists = mapping.get(name)
        if not dists:
            unknown.append(name)
            continue
        for dist in dists:
            if dist.lower() == "benchkit":
                continue
            try:
                reqs.add(f"{dist}=={importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                unknown.append(name)
    return sorted(reqs, key=str.lower), unknown
