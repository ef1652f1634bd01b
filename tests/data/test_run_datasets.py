"""``benchkit run`` and the datasets of its module: a declared dataset that no longer matches
the one in the store gets a warning naming the re-migrate command, or stops the run under
``--strict`` before any run is recorded; following the command makes it match again."""

from __future__ import annotations

import pytest

from benchkit.cli.main import main
from benchkit.store import LocalStore
from benchkit.training import runs

TRAIN_PY = """
from pathlib import Path
import benchkit as bench

HERE = Path(__file__).resolve().parent

@bench.dataset("nums")
def nums():
    for i in range(int((HERE / "n.txt").read_text())):
        yield i, float(i)

@bench.train(config={"batch_size": 4})
def train(run):
    n = sum(len(ids) for ids, _ in run.loader("nums"))
    (HERE / "seen.txt").write_text(str(n))
"""


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def project(make_project):
    root = make_project(TRAIN_PY)
    (root / "n.txt").write_text("10")
    return root


def run(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, flat(capsys.readouterr().err)


@pytest.mark.timeout(300)
def test_a_stale_dataset_warns_stops_under_strict_and_the_named_command_fixes_it(project, capsys):
    store = LocalStore(project / "store")
    code, err = run(capsys, "run", "train.py", "--cpu")
    assert code == 0 and "dataset 'nums' migrated" in err and "no longer matches" not in err
    assert (project / "seen.txt").read_text() == "10"

    (project / "n.txt").write_text("12")  # the declaration changed; the store did not
    code, err = run(capsys, "run", "train.py", "--cpu")
    assert code == 0 and (project / "seen.txt").read_text() == "10"
    assert "warning: dataset 'nums' in store" in err
    assert "no longer matches its declaration in train.py" in err
    assert "the store holds 10 samples" in err and "it now gives 12 samples" in err
    command = err.split("Re-migrate it with `")[1].split("`")[0]
    assert command == "python -m benchkit migrate data train.py nums --yes"

    code, err = run(capsys, "run", "train.py", "--cpu", "--strict")
    assert code == 1 and "--strict" in err and "no longer matches" in err
    assert len(runs.list_records(store)) == 2, "a refused run records nothing"

    code, _ = run(capsys, *command.split()[3:])
    assert code == 0
    code, err = run(capsys, "run", "train.py", "--cpu", "--strict")
    assert code == 0 and "no longer matches" not in err
    assert (project / "seen.txt").read_text() == "12"


def test_a_dataset_migrated_without_a_fingerprint_is_not_called_stale(project, capsys):
    from benchkit.data.index import DatasetIndex

    code, _ = run(capsys, "migrate", "data", "--workers", "1")
    assert code == 0
    store = LocalStore(project / "store")
    key = "datasets/nums/index.json"
    index = DatasetIndex.from_json(store.get(key))
    index.extra.pop("fingerprint")  # as written by a BenchKit before fingerprints
    store.put(key, index.to_json().encode())
    (project / "n.txt").write_text("11")
    code, err = run(capsys, "run", "train.py", "--cpu", "--strict")
    assert code == 0 and "no longer matches" not in err


def test_an_unreachable_store_read_by_a_declaration_stays_a_connection_error(monkeypatch):
    """Checking a declaration that reads from a store nobody answers on says so, as the
    store's error (retried, reported as such), not as a problem with the data."""
    import benchkit as bench
    from benchkit.data.migrate import declaration_fingerprint
    from benchkit.errors import StoreConnectionError
    from benchkit.store import open_store

    monkeypatch.setenv("BENCHKIT_S3_RETRIES", "0")
    dead = "s3://far-bucket/p?endpoint=http://127.0.0.1:9&region=us-east-1"  # port 9: discard

    @bench.dataset("far")
    def far():
        yield open_store(dead).get("labels.txt"), 0

    with pytest.raises(StoreConnectionError, match="dataset 'far': cannot reach store"):
        declaration_fingerprint(far)
