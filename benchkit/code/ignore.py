"""Which project files a code package may hold: ``.gitignore`` / ``.benchkitignore`` rules
plus the things BenchKit never packages.

The rule files use gitignore syntax; the common subset is implemented as git does it:
``#`` comments, ``!`` negation (the last matching rule wins), ``dir/`` patterns that match
directories only, patterns with a ``/`` anchored to the rule file's directory, ``*``, ``?``,
``[...]`` and ``**``. As in git, a file inside an ignored directory cannot be re-included.
Rule files may sit in any directory and apply below it; deeper files override shallower ones,
and in one directory ``.benchkitignore`` overrides ``.gitignore`` (so ``!name`` in
``.benchkitignore`` can take back something git ignores).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
    """One line of a rule file."""

    base: str  # directory of the rule file, relative to the root ("" for the root)
    pattern: str  # the line as written (for messages)
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    source: str = ""  # the rule file, relative to the root

    def describe(self) -> str:
        return f"{self.pattern!r} in {self.source or 'the rules'}"

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Does this rule match ``rel`` (relative to the root, posix)?"""
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1 :]
        return self.regex.fullmatch(rel) is not None


def _translate(pat: str) -> str:
    """A gitignore glob (already stripped of ``!``, leading and trailing ``/``) as a regex."""
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat.startswith("**", i):
                at_start = i == 0 or pat[i - 1] == "/"
                j = i + 2
                if at_start and j < n and pat[j] == "/":  # "**/" : zero or more directories
                    out.append("(?:.*/)?")
                    i = j + 1
                    continue
                if at_start and j == n:  # trailing "/**" : everything inside
                    out.append(".*")
                    i = j
                    continue
                out.append("[^/]*")  # "**" elsewhere acts like "*"
                i = j
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:  # unterminated: a literal "["
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                if body[:1] in "!^":
                    body = "^" + body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_rules(text: str, base: str = "", source: str = "") -> list[Rule]:
    """Parse the text of a gitignore-style file found in directory ``base`` (relative, posix)."""
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        # trailing spaces are ignored unless escaped with a backslash
        stripped = line.rstrip(" ")
        if stripped.endswith("\\") and len(stripped) < len(line):
            stripped += " "
        line = stripped
        if not line or line.startswith("#"):
            continue
        negate = False
        if line.startswith("!"):
            negate, line = True, line[1:]
        elif line.startswith("\\!") or line.startswith("\\#"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = line.lstrip("/")
        regex = _translate(body)
        if not anchored:
            regex = "(?:.*/)?" + regex
        rules.append(
            Rule(base, raw.strip(), re.compile(regex, re.DOTALL), negate, dir_only, source)
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


def glob_matcher(pattern: str) -> re.Pattern[str]:
    """A regex for one ``include`` pattern (gitignore glob syntax, relative to the root); a
    pattern naming a directory takes everything inside it."""
    rules = parse_rules(pattern)
    if len(rules) != 1 or rules[0].negate:
        raise ConfigError(
            f"invalid [code] include pattern {pattern!r}: give one glob such as "
            "'configs/*.yaml' or 'assets/' (leave files out with .benchkitignore)"
        )
    return re.compile(f"(?:{rules[0].regex.pattern})(?:/.*)?", re.DOTALL)
