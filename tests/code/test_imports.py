"""Import discovery: which project files a module needs, found with ast."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.code.imports import distributions_for, scan_imports
from benchkit.code.package import collect_files
from benchkit.errors import CodePackageError


def test_local_modules_packages_and_relative_imports_are_followed(project: Path) -> None:
    scan = scan_imports(project / "train.py", project)
    assert scan.local == {
        "train.py",
        "helpers.py",
        "models/__init__.py",
        "models/net.py",
        "models/layers.py",
    }
    # third-party imports are named, standard library and local ones are not
    assert scan.third_party == {"torch", "numpy"}


def test_collect_files_adds_project_files_and_leaves_out_unimported_ones(
    project: Path, write
) -> None:
    write(project, {"requirements.txt": "torch\n"})
    root, entry, files, third = collect_files(project / "train.py")
    assert root == project.resolve() and entry == "train.py"
    assert "unused.py" not in files and "notes.txt" not in files
    assert {"benchkit.toml", "requirements.txt", "models/layers.py"} <= set(files)


def test_relative_import_forms_and_submodules(tmp_path: Path, write) -> None:
    write(
        tmp_path,
        {
            "main.py": "from app import run\nimport app.tools.cli as cli\n",
            "app/__init__.py": "from . import config\nfrom .util import helper\n",
            "app/config.py": "from .. import toplevel_shared\n",  # goes above the package
            "toplevel_shared.py": "",
            "app/util/__init__.py": "",
            "app/util/helper.py": "from ..config import x\n",
            "app/tools/__init__.py": "",
            "app/tools/cli.py": "from .. import run_mod\n",
            "app/run_mod.py": "",
            "app/run.py": "",
            "app/unused.py": "",
        },
    )
    scan = scan_imports(tmp_path / "main.py", tmp_path)
    assert scan.local == {
        "main.py", "app/__init__.py", "app/config.py", "toplevel_shared.py", "app/util/__init__.py",
        "app/util/helper.py", "app/tools/__init__.py", "app/tools/cli.py", "app/run_mod.py", "app/run.py",
    }  # fmt: skip


def test_dynamic_imports_with_literal_names_and_imports_inside_functions(
    tmp_path: Path, write
) -> None:
    write(
        tmp_path,
        {
            "main.py": "import importlib\ndef f():\n    import lazy\n    return importlib.import_module('plugins.a')\n",
            "lazy.py": "__import__('late')\n",
            "late.py": "",
            "plugins/__init__.py": "",
            "plugins/a.py": "",
        },
    )
    assert scan_imports(tmp_path / "main.py", tmp_path).local == {
        "main.py", "lazy.py", "late.py", "plugins/__init__.py", "plugins/a.py",
    }  # fmt: skip


def test_imports_resolve_from_the_entry_dir_and_the_project_root(tmp_path: Path, write) -> None:
    write(
        tmp_path,
        {
            "benchkit.toml": "",
            "scripts/train.py": "import near\nimport shared.util\n",
            "scripts/near.py": "",
            "shared/__init__.py": "",
            "shared/util.py": "",
        },
    )
    root, entry, files, _ = collect_files(tmp_path / "scripts" / "train.py")
    assert entry == "scripts/train.py"
    assert files == [
        "benchkit.toml",
        "scripts/near.py",
        "scripts/train.py",
        "shared/__init__.py",
        "shared/util.py",
    ]


def test_a_bare_directory_does_not_shadow_an_installed_package(tmp_path: Path, write) -> None:
    # a raw-data folder called "numpy" without __init__.py is no package; numpy stays third-party
    write(
        tmp_path,
        {
            "main.py": "import numpy\nimport localns.mod\n",
            "numpy/readme.md": "",
            "localns/mod.py": "",
        },
    )
    scan = scan_imports(tmp_path / "main.py", tmp_path)
    assert "numpy" in scan.third_party
    assert scan.local == {"main.py", "localns/mod.py"}  # a namespace package of the project


def test_requirements_pinned_from_installed_versions() -> None:
    from importlib.metadata import version

    reqs, unknown = distributions_for(["torch", "numpy", "PIL", "surely_not_installed_pkg_xyz"])
    assert f"torch=={version('torch')}" in reqs
    assert f"numpy=={version('numpy')}" in reqs
    assert any(
        r.lower().startswith("pillow==") for r in reqs
    )  # import name PIL, distribution pillow
    assert unknown == ["surely_not_installed_pkg_xyz"]


def test_syntax_error_names_the_file_and_line(tmp_path: Path, write) -> None:
    write(tmp_path, {"main.py": "import broken\n", "broken.py": "x = (\n"})
    with pytest.raises(CodePackageError, match=r"broken\.py:1"):
        scan_imports(tmp_path / "main.py", tmp_path)
