"""A server whose blobs live in S3 (moto_server on loopback, through BenchKit's own tensorstore
backend): uploads are staged on the server's disk and committed with the store's atomic
put_file; clients see the same contract and never need S3 credentials."""

from __future__ import annotations

import hashlib
import os

import boto3
import pytest
from serverkit import start_server

from benchkit.store.http import HttpStore
from benchkit.training import runs

MiB = 1024 * 1024


@pytest.mark.s3
@pytest.mark.slow
def test_a_server_over_s3(moto_server, s3_bucket, tmp_path_factory, tmp_path):
    url = f"s3://{s3_bucket}/bench?endpoint={moto_server}&region=us-east-1"
    server = start_server(tmp_path_factory.mktemp("s3srv"), store_url=url)
    try:
        project = server.create_project()
        store = HttpStore(server.url, project.key, project.id, part_size=MiB)
        big = os.urandom(5 * MiB + 3)
        src = tmp_path / "big.bin"
        src.write_bytes(big)
        store.put_file("ckpt/big.bin", src)  # an upload session of 6 parts, then S3 parts
        store.put("a/small", b"small")
        runs.save_record(store, runs.RunRecord(id="20260101-000000-s3-0001", name="s3"))
        assert store.get("a/small") == b"small"
        assert store.get_range("ckpt/big.bin", MiB - 2, 3 * MiB + 1) == big[MiB - 2 : 3 * MiB + 1]
        back = store.get_file("ckpt/big.bin", tmp_path / "back.bin")
        assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big).digest()
        assert store.list() == ["a/small", "ckpt/big.bin", "runs/20260101-000000-s3-0001/run.json"]
        assert [r["name"] for r in store.catalog().runs()] == ["s3"]
        s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert f"bench/projects/{project.id}/a/small" in keys
        assert all(k.startswith(f"bench/projects/{project.id}/") for k in keys)
        assert store.delete_prefix("ckpt/") == 1
        assert not store.exists("ckpt/big.bin")
        assert not list((server.data_dir / "staging").iterdir())  # nothing left staged
    finally:
        server.close()
