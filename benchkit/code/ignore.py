"""Which project files a code package may hold: ``.gitignore`` / ``.benchkitignore`` rules
plus the things BenchKit never packages.

The rule files use gitignore syntax, matched by ``pathspec`` (git's own wildmatch rules:
comments, ``!`` negation with the last matching rule winning, ``dir/`` patterns that match
directories only, patterns with a ``/`` anchored to the rule file's directory, ``*``, ``?``,
``[...]``, ``**``, escapes and trailing spaces). As in git, a file inside an ignored directory
cannot be re-included, and ``dir/**`` matches what is inside ``dir``, not ``dir`` itself (so
``!dir/keep.py`` still works after it). Rule files may sit in any directory and apply below
it; deeper files override shallower ones, and in one directory ``.benchkitignore`` overrides
``.gitignore`` (so ``!name`` in ``.benchkitignore`` can take back something git ignores).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from benchkit.errors import ConfigError

log = logging.getLogger(__name__)

RULE_FILES = (".gitignore", ".benchkitignore")

#: Directory names never packaged, whatever the rule files say: version control, caches,
#: BenchKit's own staging area and cache, checkpoints.
NEVER_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".benchkit",
        ".ipynb_checkpoints",
        "checkpoints",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        "node_modules",
    }
)
#: Directories that conventionally hold a dataset's raw files: only Python modules are ever
#: taken from them (a ``data`` package imported by the code still travels).
RAW_DATA_DIRS = frozenset({"data", "datasets", "raw", "raw_data"})
#: Suffixes of compiled or checkpoint files that are never packaged.
NEVER_SUFFIXES = (".pyc", ".pyo", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class Rule:
    """One line of a rule file (a compiled ``pathspec`` gitignore pattern)."""

    base: str  # directory of the rule file, relative to the root ("" for the root)
    pattern: str  # the line as written (for messages)
    compiled: Any  # the pathspec pattern
    negate: bool
    #: ``dir/**``: matches what is inside ``dir``, never ``dir`` itself (as in git)
    inside_only: bool = False
    source: str = ""  # the rule file, relative to the root

    def describe(self) -> str:
        return f"{self.pattern!r} in {self.source or 'the rules'}"

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Does this rule match ``rel`` (relative to the root, posix)?"""
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1 :]
        if is_dir:
            if self.inside_only:
                return False
            rel += "/"  # how pathspec tells a directory from a file
        return self.compiled.match_file(rel) is not None


def parse_rules(text: str, base: str = "", source: str = "") -> list[Rule]:
    """Parse the text of a gitignore-style file found in directory ``base`` (relative, posix)."""
    rules: list[Rule] = []
    for raw in text.splitlines():
        [compiled] = GitIgnoreSpec.from_lines([raw]).patterns or [None]
        if compiled is None or compiled.include is None:  # blank or a comment
            continue
        body = raw.strip().lstrip("!")
        rules.append(
            Rule(
                base,
                raw.strip(),
                compiled,
                negate=not compiled.include,
                inside_only=body.rstrip("/").endswith("/**") or body == "**",
                source=source,
            )
        )
    return rules


def is_virtualenv(path: Path) -> bool:
    """True for a directory holding a virtual environment (it has ``pyvenv.cfg``)."""
    return (path / "pyvenv.cfg").is_file()


class ProjectFiles:
    """Answers "may this file be packaged?" for paths under a project root."""

    def __init__(
        self, root: str | os.PathLike[str], exclude_dirs: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        """``exclude_dirs``: more directories never packaged (e.g. a local store inside the project)."""
        self.root = Path(root).resolve()
        self._rules: dict[str, list[Rule]] = {}
        self._dir_verdict: dict[str, str | None] = {}
        self._extra: set[str] = set()
        for d in exclude_dirs:
            try:
                self._extra.add(Path(d).resolve().relative_to(self.root).as_posix())
            except ValueError:
                continue  # outside the project: nothing to leave out

    def rules_in(self, rel_dir: str) -> list[Rule]:
        """The rules of the rule files in one directory (relative posix path, "" for the root)."""
        if rel_dir not in self._rules:
            rules: list[Rule] = []
            d = self.root / rel_dir
            for name in RULE_FILES:
                f = d / name
                if f.is_file():
                    try:
                        rules += parse_rules(
                            f.read_text(errors="replace"),
                            rel_dir,
                            f"{rel_dir}/{name}" if rel_dir else name,
                        )
                    except OSError as e:
                        log.warning("cannot read %s: %s", f, e)
            self._rules[rel_dir] = rules
        return self._rules[rel_dir]

    def _rule_verdict(self, rel: str, is_dir: bool) -> Rule | None:
        """The last rule matching ``rel`` among the rule files of its parent directories."""
        parts = rel.split("/")
        found: Rule | None = None
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            for rule in self.rules_in(base):
                if rule.matches(rel, is_dir):
                    found = rule
        return found

    def dir_excluded(self, rel_dir: str) -> str | None:
        """Why directory ``rel_dir`` (or a parent) is left out, or None when it is not."""
        if rel_dir in ("", "."):
            return None
        if rel_dir in self._dir_verdict:
            return self._dir_verdict[rel_dir]
        parent, _, name = rel_dir.rpartition("/")
        reason = self.dir_excluded(parent)
        if reason is None:
            if name in NEVER_DIRS:
                reason = f"{name}/ is never packaged"
            elif rel_dir in self._extra:
                reason = f"{rel_dir}/ holds BenchKit data (a store), not code"
            elif is_virtualenv(self.root / rel_dir):
                reason = f"{rel_dir}/ is a virtual environment"
            else:
                rule = self._rule_verdict(rel_dir, True)
                if rule is not None and not rule.negate:
                    reason = f"ignored by {rule.describe()}"
        self._dir_verdict[rel_dir] = reason
        return reason

    def excluded(self, rel: str) -> str | None:
        """Why file ``rel`` (relative to the root, posix) may not be packaged, or None."""
        parent, _, name = rel.rpartition("/")
        reason = self.dir_excluded(parent)
        if reason is not None:
            return reason
        if name.endswith(NEVER_SUFFIXES):
            return f"{name} is a compiled or checkpoint file"
        if not name.endswith(".py") and any(
            p.lower() in RAW_DATA_DIRS for p in parent.split("/") if p
        ):
            return f"{rel} lies in a data directory (only Python modules are taken from those)"
        rule = self._rule_verdict(rel, False)
        if rule is not None and not rule.negate:
            return f"ignored by {rule.describe()}"
        return None

    def walk(self) -> list[str]:
        """Every file under the root that may be packaged (relative posix paths, sorted)."""
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not os.path.islink(os.path.join(dirpath, d))
                and self.dir_excluded(f"{rel_dir}/{d}" if rel_dir else d) is None
            )
            for name in filenames:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if self.excluded(rel) is None:
                    found.append(rel)
        return sorted(found)


class IncludePattern:
    """One ``include`` pattern of ``[code]`` (gitignore glob syntax, relative to the root);
    a pattern naming a directory takes everything inside it."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def fullmatch(self, rel: str) -> bool:
        """Does the pattern take file ``rel`` (relative to the root, posix)?"""
        return self.rule.matches(rel, False)


def glob_matcher(pattern: str) -> IncludePattern:
    """The matcher for one ``include`` pattern (see :class:`IncludePattern`)."""
    rules = parse_rules(pattern)
    if len(rules) != 1 or rules[0].negate:
        raise ConfigError(
            f"invalid [code] include pattern {pattern!r}: give one glob such as "
            "'configs/*.yaml' or 'assets/' (leave files out with .benchkitignore)"
        )
    return IncludePattern(rules[0])
