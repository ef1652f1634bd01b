"""Two ``migrate code`` runs at once never get the same version number: each claims its
number in the store with a create-only-if-absent write before writing anything else."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchkit.code.package import get_manifest, list_versions
from benchkit.store import open_store

#: migrate_code in a process that waits at a line, over a store whose listings take 0.5 s
#: longer (a slow network): both runs list the versions before either writes one, the window
#: in which they would pick the same number
RACER = textwrap.dedent(
    """
    import json, os, sys, time
    from benchkit.code.package import migrate_code
    from benchkit.store import open_store

    store = open_store(sys.argv[2])
    listing = store.list

    def slow_list(prefix=""):
        keys = listing(prefix)
        time.sleep(0.5)
        return keys

    store.list = slow_list
    print("ready", flush=True)
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.0005)
    result = migrate_code(sys.argv[1], store, message=sys.argv[4])
    print(json.dumps({"version": result.version, "created": result.created}))
    """
)


def _project(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(f"TAG = {tag!r}\n")
    return root / "train.py"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def race_store(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_store_url")


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_two_concurrent_migrations_get_two_versions(tmp_path, race_store):
    go = tmp_path / "go"
    procs = {
        tag: subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(_project(tmp_path / tag, tag)),
                race_store,
                str(go),
                tag,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for tag in ("a", "b")
    }
    for proc in procs.values():
        assert proc.stdout.readline().strip() == "ready", proc.communicate()
    go.write_text("go")
    versions = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        versions[tag] = json.loads(out.strip().splitlines()[-1])["version"]
    assert sorted(versions.values()) == [1, 2]
    store = open_store(race_store)
    assert [m.version for m in list_versions(store)] == [1, 2]
    for tag, version in versions.items():
        assert get_manifest(store, version).message == tag  # each run's own code, none lost


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_concurrent_migrate_code_commands_store_every_version(tmp_path):
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchkit",
                "migrate",
                "code",
                str(_project(tmp_path / t, t)),
                "--store",
                str(store),
                "-m",
                t,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for t in ("p", "q", "r")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    stored = list_versions(open_store(str(store)))
    assert [m.version for m in stored] == [1, 2, 3]
    assert sorted(m.message for m in stored) == ["p", "q", "r"]
