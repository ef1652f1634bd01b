"""An S3 endpoint on loopback for the benchmarks: ``moto_server`` on 127.0.0.1, plus uploads.

Also a tiny ``cat`` for WebDataset's ``pipe:`` URLs (WebDataset has no S3 client of its own):
``python benchmarks/s3.py cat BUCKET KEY`` streams one object to stdout with boto3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("benchmarks.s3")

BUCKET = "bench"
REGION = "us-east-1"
#: moto accepts any credentials; the libraries need some to sign requests
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_env(endpoint: str) -> dict[str, str]:
    """Environment that points every library (and boto3) at ``endpoint``."""
    return {
        **CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,  # boto3 >= 1.28, litdata
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ALLOW_HTTP": "true",  # obstore (LitData's chunk downloader) refuses http otherwise
        "S3_ENDPOINT_URL": endpoint,  # MosaicML Streaming
        "BENCHKIT_S3_ENDPOINT": endpoint,  # BenchKit settings
        "BENCHKIT_S3_REGION": REGION,
    }


def client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@contextlib.contextmanager
def moto_server(log_path: Path | None = None) -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yields its endpoint URL."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        client(endpoint).create_bucket(Bucket=BUCKET)
        log.info("moto_server on %s (pid %d)", endpoint, proc.pid)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()


def upload_tree(endpoint: str, local: Path, prefix: str) -> int:
    """Upload every file under ``local`` to ``s3://BUCKET/<prefix>/<relative path>``; returns bytes."""
    from boto3.s3.transfer import TransferConfig

    c = client(endpoint)
    cfg = TransferConfig(multipart_threshold=1 << 40)  # single PUTs, like the libraries' own
    total = 0
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        c.upload_file(str(path), BUCKET, f"{prefix}/{rel}", Config=cfg)
        total += path.stat().st_size
    return total


def cat(bucket: str, key: str) -> None:
    """Stream one object to stdout (WebDataset ``pipe:`` helper); endpoint from the environment."""
    c = client(os.environ["AWS_ENDPOINT_URL"])
    body = c.get_object(Bucket=bucket, Key=key)["Body"]
    out = sys.stdout.buffer
    for block in iter(lambda: body.read(1 << 20), b""):
        out.write(block)
    out.flush()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "cat":
        cat(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python benchmarks/s3.py cat BUCKET KEY")
