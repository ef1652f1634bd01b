"""Ignore rules: gitignore syntax, .benchkitignore, and what is never packaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.code.ignore import ProjectFiles, parse_rules


def ignored(rules_text: str, rel: str, is_dir: bool = False) -> bool:
    verdict = None
    for rule in parse_rules(rules_text):
        if rule.matches(rel, is_dir):
            verdict = rule
    return verdict is not None and not verdict.negate


@pytest.mark.parametrize(
    ("rules", "path", "is_dir", "expected"),
    [
        ("*.log", "a.log", False, True),
        ("*.log", "deep/er/a.log", False, True),
        ("*.log", "a.logx", False, False),
        ("*.log\n!keep.log", "keep.log", False, False),
        ("*.log\n!keep.log", "x/keep.log", False, False),
        ("*.log\n!keep.log\n*.log", "keep.log", False, True),  # the last match wins
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # dir-only pattern never matches a file
        ("build/", "src/build", True, True),
        ("/top.py", "top.py", False, True),
        ("/top.py", "sub/top.py", False, False),  # anchored to the rule file's directory
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "docs/sub/a.md", False, False),  # * does not cross /
        ("docs/*.md", "x/docs/a.md", False, False),  # a slash anchors the pattern
        ("**/cache", "cache", True, True),
        ("**/cache", "a/b/cache", True, True),
        ("logs/**", "logs/a/b.txt", False, True),
        ("logs/**", "logs", True, False),
        ("a/**/z.py", "a/z.py", False, True),
        ("a/**/z.py", "a/b/c/z.py", False, True),
        ("a/**/z.py", "b/a/z.py", False, False),
        ("file?.py", "file1.py", False, True),
        ("file?.py", "file10.py", False, False),
        ("[ab].py", "a.py", False, True),
        ("[!ab].py", "a.py", False, False),
        ("[!ab].py", "c.py", False, True),
        ("# comment\n\n   \n", "# comment", False, False),
        ("\\#hash.py", "#hash.py", False, True),
        ("\\!bang.py", "!bang.py", False, True),
        ("trailing.py   ", "trailing.py", False, True),
    ],
)
def test_gitignore_patterns(rules: str, path: str, is_dir: bool, expected: bool) -> None:
    assert ignored(rules, path, is_dir) is expected


def test_files_inside_an_ignored_directory_cannot_be_re_included(tmp_path: Path, write) -> None:
    write(tmp_path, {".gitignore": "out/\n!out/keep.py\n", "out/keep.py": "", "in/keep.py": ""})
    files = ProjectFiles(tmp_path)
    assert files.excluded("out/keep.py") is not None
    assert files.excluded("in/keep.py") is None


def test_a_file_under_dir_star_star_can_be_re_included_as_in_git(tmp_path: Path, write) -> None:
    write(
        tmp_path,
        {".gitignore": "logs/**\n!logs/keep.py\n", "logs/keep.py": "", "logs/run.py": ""},
    )
    files = ProjectFiles(tmp_path)
    assert files.excluded("logs/keep.py") is None
    assert "logs/**" in (files.excluded("logs/run.py") or "")
    assert files.walk() == [".gitignore", "logs/keep.py"]


def test_benchkitignore_overrides_gitignore_and_nested_files_apply_below(
    tmp_path: Path, write
) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "secret_*.py\n",
            ".benchkitignore": "!secret_ok.py\nscratch.py\n",
            "sub/.gitignore": "local.py\n",
            "secret_ok.py": "",
            "secret_key.py": "",
            "scratch.py": "",
            "sub/local.py": "",
            "local.py": "",
        },
    )
    files = ProjectFiles(tmp_path)
    assert files.excluded("secret_ok.py") is None
    assert "secret_*.py" in (files.excluded("secret_key.py") or "")
    assert ".benchkitignore" in (files.excluded("scratch.py") or "")
    assert "sub/.gitignore" in (files.excluded("sub/local.py") or "")
    assert files.excluded("local.py") is None


def test_never_packaged_whatever_the_rules_say(tmp_path: Path, write) -> None:
    write(
        tmp_path,
        {
            ".benchkitignore": "!*\n",
            "env/pyvenv.cfg": "home = /usr\n",
            "env/lib/site.py": "",
            "__pycache__/m.cpython-311.pyc": "",
            ".git/config": "",
            ".benchkit/staging/chunk.bin": "",
            "checkpoints/last.py": "",
            "data/images/cat.png": "png",
            "data/loader.py": "",
            "Datasets/ProjectDatasets.py": "",
            "Datasets/labels.csv": "a,b",
            "model.ckpt": "",
            "ok.py": "",
        },
    )
    files = ProjectFiles(tmp_path)
    assert "virtual environment" in (files.excluded("env/lib/site.py") or "")
    for rel in (
        "__pycache__/m.cpython-311.pyc",
        ".git/config",
        ".benchkit/staging/chunk.bin",
        "checkpoints/last.py",
        "data/images/cat.png",
        "Datasets/labels.csv",
        "model.ckpt",
    ):
        assert files.excluded(rel) is not None, rel
    # Python modules in a data directory may still be imported code
    assert files.excluded("data/loader.py") is None
    assert files.excluded("Datasets/ProjectDatasets.py") is None
    assert files.walk() == [
        ".benchkitignore",
        "Datasets/ProjectDatasets.py",
        "data/loader.py",
        "ok.py",
    ]


def test_include_patterns(tmp_path: Path) -> None:
    from benchkit.code.ignore import glob_matcher
    from benchkit.errors import ConfigError

    assert glob_matcher("assets/").fullmatch("assets/img/a.png")
    assert glob_matcher("*.yaml").fullmatch("configs/deep/a.yaml")
    assert glob_matcher("/top.yaml").fullmatch("top.yaml")
    assert not glob_matcher("/top.yaml").fullmatch("sub/top.yaml")
    assert not glob_matcher("configs/*.yaml").fullmatch("configs/a.json")
    for bad in ("!x.py", "", "# only a comment"):
        with pytest.raises(ConfigError, match="include pattern"):
            glob_matcher(bad)
