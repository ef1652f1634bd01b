"""Job environments built from a version's requirements with real pip (offline, from a wheel
made here): built once, reused by the next job with the same requirements, the machine's torch
seen and never reinstalled; requirements pip cannot satisfy are a clear error."""

from __future__ import annotations

import subprocess

import pytest
from remotekit import make_wheel

from benchkit.errors import JobError
from benchkit.remote.envs import ensure_env, env_key


@pytest.fixture
def offline_index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "bkdemo", "1.0", "VALUE = 42\n")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return wheels


def test_an_environment_is_built_once_reused_and_sees_the_machines_torch(tmp_path, offline_index):
    said: list[str] = []
    root = tmp_path / "envs"
    env = ensure_env(["torch>=1.0", "bkdemo==1.0", ""], root, say=said.append, what="version 1")
    assert not env.reused and env.installed == ("bkdemo==1.0",) and env.skipped == ("torch>=1.0",)
    assert any("building environment" in s for s in said)
    probe = subprocess.run(
        [env.python, "-c", "import bkdemo, importlib.util as u; "
         "print(bkdemo.VALUE, bkdemo.__file__, u.find_spec('torch').origin)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    value, demo_file, torch_file = probe.stdout.split()
    assert value == "42" and demo_file.startswith(str(root / env.key))  # installed in the env
    assert not torch_file.startswith(str(root))  # the machine's torch, not a copy
    assert not list((root / env.key).rglob("torch/__init__.py"))

    said.clear()
    again = ensure_env(["bkdemo==1.0", "torch>=1.0"], root, say=said.append)
    assert again.reused and again.key == env.key and again.python == env.python
    assert any("reused" in s for s in said) and not any(s.startswith("$ ") for s in said)  # no pip
    assert env_key([]) != env.key != env_key(["bkdemo==2.0"])  # other requirements, another


def test_requirements_pip_cannot_satisfy_are_a_clear_error_and_leave_nothing(
    tmp_path, offline_index
):
    root = tmp_path / "envs"
    with pytest.raises(JobError, match="could not be installed") as e:
        ensure_env(["bkdemo==9.9"], root, what="code version 3")
    assert "bkdemo==9.9" in str(e.value) and "code version 3" in str(e.value)
    assert "fix requirements.txt" in str(e.value)
    assert [p.name for p in root.iterdir() if p.is_dir()] == []  # no half-built environment
