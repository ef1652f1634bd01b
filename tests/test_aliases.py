"""The original BenchKit's import paths (``BenchKit.Data.Helpers`` ...) work without a
``BenchKit/`` folder: the original README's own user code runs unchanged, and wheels and
editable installs ship the ``.pth`` file that installs the aliases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = Path(__file__).resolve().parent / "original"
PTH = "benchkit-aliases.pth"


@pytest.fixture
def alias_env(tmp_path):
    """Environment for subprocesses that import this tree with the ``.pth`` file processed as
    site-packages would (a ``sitecustomize`` that adds a directory holding it as a site dir)."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(REPO / PTH, site_dir / PTH)
    (site_dir / "sitecustomize.py").write_text(
        "import os, site\nsite.addsitedir(os.path.dirname(os.path.abspath(__file__)))\n"
    )
    path = [str(site_dir), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _python(code: str, env: dict[str, str], cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_original_paths_are_the_benchkit_objects_with_a_deprecation_note(alias_env, tmp_path):
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "from BenchKit.Data.Helpers import get_dataset\n"
        "from BenchKit.Data.Datasets import ProcessorDataset, IterableChunk\n"
        "from BenchKit.Train.Helpers import get_accelerator, wipe_temp\n"
        "from BenchKit.Tracking.Tracker import BenchAccelerateTracker\n"
        "from BenchKit.Tracking.Helpers import upload_model_checkpoint\n"
        "import benchkit\n"
        f"assert benchkit.__file__.startswith({str(REPO)!r}), benchkit.__file__\n"
        "for n in ('get_dataset', 'ProcessorDataset', 'IterableChunk', 'get_accelerator',\n"
        "          'wipe_temp', 'BenchAccelerateTracker', 'upload_model_checkpoint'):\n"
        "    assert globals()[n] is getattr(benchkit, n), n\n"
        "print('OK')\n"
    )
    proc = _python(code, alias_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
    # one note, on the line of the first BenchKit import, pointing to `import benchkit`
    notes = [line for line in proc.stderr.splitlines() if "DeprecationWarning" in line]
    assert len(notes) == 1, proc.stderr
    assert notes[0].startswith("<string>:3: DeprecationWarning") and "import benchkit" in notes[0]
    assert not (REPO / "BenchKit").exists() and not (REPO / "BenchKit.py").exists()


def test_original_names_replaced_by_commands_say_which_command(alias_env, tmp_path):
    proc = _python("from BenchKit.Data.Helpers import create_dataset_zips", alias_env, tmp_path)
    assert proc.returncode == 1
    assert "ImportError" in proc.stderr and "manage.py migrate-data" in proc.stderr
    proc = _python("import BenchKit.Data.Nothing", alias_env, tmp_path)
    assert "No module named 'BenchKit.Data.Nothing'" in proc.stderr


def test_a_real_benchkit_package_on_the_path_wins(alias_env, tmp_path):
    real = tmp_path / "elsewhere" / "BenchKit"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("ORIGIN = 'the real one'\n")
    env = {**alias_env, "PYTHONPATH": f"{real.parent}{os.pathsep}{alias_env['PYTHONPATH']}"}
    proc = _python("import BenchKit; print(BenchKit.ORIGIN)", env, tmp_path)
    assert proc.stdout.strip() == "the real one", proc.stderr


def _images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        colour = (230, 120, 20) if name.startswith("cat") else (20, 90, 230)
        Image.new("RGB", (24, 24), tuple(max(0, c - 5 * i) for c in colour)).save(folder / name)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_the_original_readme_code_migrates_and_trains_unchanged(alias_env, tmp_path):
    """The README's CatDog/CatDogChunk classes and main(), and its train_one_epoch /
    validate_one_epoch, verbatim, through `python manage.py migrate-data` and `python
    TrainScript.py` in a project made by `benchkit startproject`."""
    from benchkit.store import LocalStore
    from benchkit.training import checkpoints as ckpt
    from benchkit.training import runs

    names = [f"{'cat' if i % 2 else 'dog'}.{i:03d}.png" for i in range(12)]
    names += [f"{'cat' if i % 2 else 'dog'}.{100 + i:03d}.png" for i in range(4)]
    _images(tmp_path / "images", names)
    store = tmp_path / "store"
    env = {**alias_env, "CATDOG_IMAGES": str(tmp_path / "images"), "BENCHKIT_STORE": str(store)}
    project = tmp_path / "proj"
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "startproject", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    shutil.copy(ORIGINAL / "ProjectDatasets.py", project / "Datasets" / "ProjectDatasets.py")
    shutil.copy(ORIGINAL / "ProjectModels.py", project / "Models" / "ProjectModels.py")
    shutil.copy(ORIGINAL / "TrainScript.py", project / "TrainScript.py")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *argv], cwd=project, env=env, capture_output=True, text=True,
            timeout=400,
        )  # fmt: skip

    proc = run("manage.py", "migrate-data", "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "chunked 'train': 12 samples" in out and "chunked 'val': 4 samples" in out
    assert "uploaded 'train'" in out and "uploaded 'val'" in out

    proc = run("TrainScript.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # train_one_epoch prints the mean loss once per epoch
    losses = [line for line in proc.stdout.splitlines() if line.startswith("tensor(")]
    assert len(losses) == 2, proc.stdout
    s = LocalStore(store)
    [record] = runs.list_records(s)
    assert record.name == "trial tun" and record.status == runs.FINISHED
    assert record.config == {"epochs": 2, "bs": 4, "lr": 1e-2}
    assert [c.name for c in ckpt.list_checkpoints(s, record.id)] == ["epoch-1", "epoch-2"]


# --- packaging: the .pth file in wheels and editable installs ---------------------------------


def _venv_with(tmp_path: Path, name: str, wheel: Path) -> Path:
    """A fresh virtual environment (no pip) that sees the test venv's packages but not its
    benchkit, with ``wheel`` installed into its site-packages; returns its python."""
    venv = tmp_path / name
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    site_dir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # torch and friends from the test environment, after this venv's own site-packages
    import sysconfig

    (Path(site_dir) / "zz-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", site_dir, str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return python


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_and_editable_install_ship_the_alias_pth(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel, follow_symlinks=False)
    dist = tmp_path / "dist"
    built = []
    for hook in ("build_wheel", "build_editable"):  # one process each, as pip does
        code = f"import sys; from setuptools import build_meta as b; print('BUILT', b.{hook}(sys.argv[1]))"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        built.append(dist / proc.stdout.split("BUILT", 1)[1].strip())
    wheel, editable = built
    for whl in (wheel, editable):
        assert PTH in zipfile.ZipFile(whl).namelist(), whl
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert not tops & {"BenchKit", "BenchKit.py"}, tops
    # BenchKit first: only the .pth file can have installed the finder by then
    code = (
        "from BenchKit.Data.Helpers import get_dataset\n"
        "import benchkit\n"
        "assert get_dataset is benchkit.get_dataset\n"
        "print(benchkit.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for label, whl, expected in (
        ("wheel", wheel, "site-packages"),
        ("editable", editable, str(src)),
    ):
        python = _venv_with(tmp_path, f"venv-{label}", whl)
        proc = subprocess.run(
            [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"{label}: {proc.stderr}"
        assert expected in proc.stdout, f"{label}: benchkit from {proc.stdout}"
