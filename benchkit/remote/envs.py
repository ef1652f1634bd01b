"""Environments for jobs, built from a code version's requirements and reused.

An environment is a virtualenv under ``<root>/<key>``, where ``key`` hashes the interpreter,
BenchKit's version and the requirements, so jobs with the same requirements share one. It sees
the machine's packages (``--system-site-packages``, and the packages of the virtualenv this
interpreter runs in, through a ``.pth`` file), so torch is reused, never reinstalled; pip then
installs only what is missing. Requirements on the framework itself (torch, torchvision,
torchaudio, BenchKit) are left to the machine: the job runs on the machine's stack.

Building is done under a file lock (two jobs needing one environment build it once) and
completes with a marker file written last, so a half-built environment is never used: the next
job finds no marker and builds it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from benchkit._version import __version__
from benchkit.errors import JobError
from benchkit.fsutil import exclusive_lock

log = logging.getLogger(__name__)

#: Distributions the machine provides; a version's pins on them are not installed.
MACHINE_PROVIDED = frozenset({"torch", "torchvision", "torchaudio", "benchkit"})
COMPLETE = ".benchkit-env-complete"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class JobEnv:
    """An environment ready to run a job."""

    python: str
    key: str
    #: False when this call built it
    reused: bool
    installed: tuple[str, ...]
    skipped: tuple[str, ...]


def requirement_name(req: str) -> str | None:
    """The normalised distribution name of a requirement line (None for options, URLs...)."""
    m = _NAME.match(req)
    if not m or req.lstrip().startswith("-"):
        return None
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def split_requirements(requirements: Iterable[str]) -> tuple[list[str], list[str]]:
    """(requirements to install, requirements the machine provides) of a version."""
    install, skipped = [], []
    for req in requirements:
        req = req.strip()
        if not req:
            continue
        (skipped if requirement_name(req) in MACHINE_PROVIDED else install).append(req)
    return install, skipped


def _base_site_dirs() -> list[str]:
    """The site-packages of the running interpreter (a virtualenv's own included)."""
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and site.ENABLE_USER_SITE:
        dirs.append(user)
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def env_key(requirements: Iterable[str], python: str = sys.executable) -> str:
    """The cache key of an environment: interpreter, BenchKit's version, requirements."""
    h = hashlib.sha256()
    for part in (
        os.path.realpath(python),
        platform.python_version(),
        __version__,
        *_base_site_dirs(),
        "--",
        *sorted(requirements),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_site(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


def _run(cmd: list[str], say: Callable[[str], None]) -> None:
    say("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        say(line.rstrip("\n"))
        tail = (tail + [line.rstrip("\n")])[-15:]
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, "\n".join(tail))


def ensure_env(
    requirements: Iterable[str],
    root: str | os.PathLike[str],
    *,
    say: Callable[[str], None] = log.info,
    what: str = "the job",
) -> JobEnv:
    """The environment for ``requirements`` under ``root``: reused when built before, else
    built now (under a lock). Raises :class:`JobError` naming the requirements pip rejected."""
    install, skipped = split_requirements(requirements)
    for req in skipped:
        say(f"{req}: the machine's own is used")
    key = env_key(install)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    python = _venv_python(path)
    with exclusive_lock(root / f"{key}.lock", what=f"the environment {path}"):
        if (path / COMPLETE).is_file():
            os.utime(path / COMPLETE)  # for least-recently-used pruning
            say(f"environment {key} reused ({len(install)} requirement(s))")
            return JobEnv(str(python), key, True, tuple(install), tuple(skipped))
        shutil.rmtree(path, ignore_errors=True)  # a build that was interrupted
        say(f"building environment {key} for {what} ({len(install)} requirement(s))")
        try:
            _build(path, python, install, say)
        except (subprocess.CalledProcessError, OSError) as e:
            shutil.rmtree(path, ignore_errors=True)
            detail = getattr(e, "output", None) or str(e)
            raise JobError(
                f"the requirements of {what} could not be installed "
                f"({', '.join(install) or 'none'}):\n{detail}\n"
                "fix requirements.txt (or the [project] dependencies) and migrate the code again"
            ) from None
        (path / COMPLETE).write_text(f"{time.time()}\n")
    return JobEnv(str(python), key, False, tuple(install), tuple(skipped))


def _build(path: Path, python: Path, install: list[str], say: Callable[[str], None]) -> None:
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)], say)
    # a virtualenv made from inside another one sees the base installation, not the packages of
    # the one we run in: add those after the new environment's own
    site_dir = _venv_site(python)
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "_benchkit_machine.pth").write_text("\n".join(_base_site_dirs()) + "\n")
    if install:
        req_file = path / "requirements.txt"
        req_file.write_text("\n".join(install) + "\n")
        _run(
            [sys.executable, "-m", "pip", "--python", str(python), "install",
             "--no-input", "--disable-pip-version-check", "-r", str(req_file)],
            say,
        )  # fmt: skip


def prune_envs(root: str | os.PathLike[str], keep: int = 8, min_idle_s: float = 86400) -> list[str]:
    """Delete the least recently used environments beyond ``keep`` that have been idle for
    ``min_idle_s``; returns the keys removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    built = sorted(
        (p for p in root.iterdir() if (p / COMPLETE).is_file()),
        key=lambda p: (p / COMPLETE).stat().st_mtime,
        reverse=True,
    )
    removed = []
    for path in built[keep:]:
        if time.time() - (path / COMPLETE).stat().st_mtime < min_idle_s:
            continue
        with exclusive_lock(root / f"{path.name}.lock", what=f"the environment {path}"):
            shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed
