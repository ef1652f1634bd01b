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
