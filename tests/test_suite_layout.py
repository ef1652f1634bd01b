"""The test suite itself: pytest imports test modules by their basename (rootdir imports, no
packages), so two test files of one name in different folders break collection of the whole
suite, which only a full run shows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_module_has_a_unique_basename():
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name.startswith("test_") or path.name == "conftest.py":
            seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    clashes.pop("conftest.py", None)  # conftests are imported per directory
    assert not clashes, f"rename one of each (pytest imports by basename): {clashes}"
