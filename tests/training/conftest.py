"""Fixtures for the training tests: a store per test, accelerate state reset, helpers that run
``benchkit`` in this process or in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchkit.cli.main import main


@pytest.fixture(autouse=True)
def reset_accelerate():
    """Accelerate keeps process-wide singletons; give every test a fresh state."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    for var in ("ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION"):
        os.environ.pop(var, None)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A local store directory, made the configured store (subprocesses inherit it)."""
    path = tmp_path / "store"
    monkeypatch.setenv("BENCHKIT_STORE", str(path))
    return path


@pytest.fixture
def module(tmp_path):
    """Write a user module: ``module("name.py", source)`` -> its path."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run ``benchkit ARGS`` in this process: returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def benchkit_subprocess():
    """``benchkit_subprocess(*args, cwd=DIR)``: ``python -m benchkit ARGS`` in a new process."""

    def run(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run(
            [sys.executable, "-m", "benchkit", *map(str, args)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    return run


# --- faults --------------------------------------------------------------------------------------


class ReadOnlySwitch:
    """Makes a store directory refuse writes, for real, and accept them again.

    As root (which ignores file modes) the store is used through a bind mount of the directory
    that is remounted read-only (``mount -o remount,bind,ro``), exactly what the issue's
    reproduction does; otherwise every directory in the store loses its write bits.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.real = tmp_path / "store-real"
        self.real.mkdir()
        self.mounted = False
        if os.geteuid() == 0:
            self.path = tmp_path / "store"
            self.path.mkdir()
            done = subprocess.run(["mount", "--bind", str(self.real), str(self.path)])
            self.mounted = done.returncode == 0
        if not self.mounted:
            self.path = self.real

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(self.path)], check=True)
        else:
            for d, _, _ in os.walk(self.real):
                os.chmod(d, 0o555)

    def writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,bind,rw", str(self.path)], check=True)
        else:
            for d, _, _ in os.walk(self.real):
                os.chmod(d, 0o755)

    def close(self) -> None:
        self.writable()
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)
            self.mounted = False


@pytest.fixture
def switchable_store(tmp_path, monkeypatch):
    """A store directory that a test can make read-only and writable again (the configured
    store, so subprocesses use it)."""
    switch = ReadOnlySwitch(tmp_path)
    monkeypatch.setenv("BENCHKIT_STORE", str(switch.path))
    yield switch
    switch.close()


def _wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 240) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the run exited ({proc.returncode}) before {path.name}:\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def wait_for():
    """``wait_for(path, proc)``: poll for a file to appear (a signal from a training
    subprocess); fails at once, with the run's output, if ``proc`` exits first."""
    return _wait_for


@pytest.fixture
def start_run():
    """``start_run(*args, cwd=DIR, env={...})``: ``python -m benchkit ARGS`` started in the
    background (stdout and stderr together); the test waits for it. Killed if left running."""
    procs = []

    def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchkit", *map(str, args)], cwd=cwd, env=full,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
