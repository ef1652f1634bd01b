"""``migrate data`` finds a store it cannot use before it chunks anything: a read-only
directory (a real read-only bind mount), a dead S3 endpoint, a bucket that does not exist."""

from __future__ import annotations

import socket

import pytest

from benchkit.cli.main import main

TRAIN_PY = """
from pathlib import Path
import benchkit as bench

@bench.dataset("train")
def train_samples():
    for i in range(20):
        yield i, float(i)
"""


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def project(make_project):
    return make_project(TRAIN_PY, store=None)


def migrate(capsys, store: str) -> tuple[int, str]:
    code = main(["migrate", "data", "--store", store, "--workers", "1"])
    return code, flat(capsys.readouterr().err)


def nothing_chunked(root) -> bool:
    return not (root / ".benchkit/staging/datasets/train").exists()


def test_a_read_only_store_directory_fails_before_chunking(project, tmp_path, capsys, read_only):
    store = tmp_path / "store"
    store.mkdir()
    with read_only(store):
        code, err = migrate(capsys, str(store))
    assert code == 1
    assert str(store) in err and ("read-only" in err or "permission denied" in err)
    assert "nothing was chunked or uploaded" in err
    assert nothing_chunked(project)
    # once writable again the same command works
    code, _ = migrate(capsys, str(store))
    assert code == 0 and (store / "datasets/train/index.json").is_file()


@pytest.mark.timeout(60)
def test_a_dead_s3_endpoint_fails_before_chunking(project, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = migrate(capsys, f"s3://bk-dead/p?endpoint=http://127.0.0.1:{port}&region=us-east-1")
    assert code == 1
    assert f"127.0.0.1:{port}" in err and "cannot reach" in err
    assert "nothing was chunked or uploaded" in err
    assert nothing_chunked(project)


@pytest.mark.s3
def test_a_missing_bucket_fails_before_chunking(project, capsys, moto_server):
    code, err = migrate(capsys, f"s3://no-such-bucket/p?endpoint={moto_server}&region=us-east-1")
    assert code == 1
    assert "bucket 'no-such-bucket' does not exist" in err and "aws s3 mb" in err
    assert nothing_chunked(project)
