"""S3 download rate of BenchKit's two S3 backends against plain boto3, on one ``moto_server``.

What a cold epoch from S3 waits for is the chunk download (``Store.get_file`` into the cache,
four chunks at a time: ``PREFETCH_THREADS``). This measures exactly that, per backend, on the
same objects in the same minute:

- ``tensorstore``: :class:`~benchkit.store.tensorstore.TensorStoreStore` (tensorstore's S3
  driver) reading objects it wrote (a manifest and 32 MiB parts);
- ``boto3, parts``: :class:`~benchkit.store.s3.S3Store` reading the same objects (the layout of
  datasets migrated before it existed);
- ``boto3, multipart``: ``S3Store`` reading objects it wrote itself (plain objects from a
  multipart upload, read as 32 MiB ranges);
- ``limit``: plain boto3 ``get_object`` of whole plain objects, 4 at a time, bodies read in
  1 MiB pieces.

Every configuration reads with ``iter_blocks`` (what the cache's download reads) and throws
the bytes away: no file, no hash, so the client is what is measured, not the disk.

Upload times of both backends are reported too. Runs alternate between the configurations.

    python benchmarks/s3_store.py [--objects 4] [--mib 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3 import BUCKET, client, endpoint_env, moto_server  # noqa: E402

log = logging.getLogger("benchmarks.s3_store")
THREADS = 4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    size = args.mib << 20
    total = args.objects * size
    tmp = Path(tempfile.mkdtemp(prefix="bk-s3store-"))
    try:
        src = tmp / "src.bin"
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        with moto_server() as endpoint:
            os.environ.update(endpoint_env(endpoint))
            from benchkit.store.s3 import S3Store
            from benchkit.store.tensorstore import TensorStoreStore

            ts = TensorStoreStore.from_url(f"s3://{BUCKET}/ts?endpoint={endpoint}")
            b3_old = S3Store.from_url(f"s3://{BUCKET}/ts?endpoint={endpoint}")
            b3 = S3Store.from_url(f"s3://{BUCKET}/b3?endpoint={endpoint}")
            keys = [f"obj{i:03d}.bin" for i in range(args.objects)]
            upload = {}
            for name, store in (("tensorstore", ts), ("boto3", b3)):
                t0 = time.perf_counter()
                for k in keys:
                    store.put_file(k, src)
                upload[name] = total / (time.perf_counter() - t0) / 1e6
                log.info("upload with %s: %.0f MB/s", name, upload[name])
            raw = client(endpoint)
            for k in keys:
                raw.upload_file(str(src), BUCKET, f"plain/{k}")

            def limit_one(k: str) -> int:
                body = raw.get_object(Bucket=BUCKET, Key=f"plain/{k}")["Body"]
                return sum(len(b) for b in iter(lambda: body.read(1 << 20), b""))

            def via(store):
                def one(k: str) -> int:  # what the cache's download reads, without its disk writes
                    return sum(len(b) for b in store.iter_blocks(k, 8 << 20))

                return one

            configs = {
                "tensorstore": via(ts),
                "boto3, parts": via(b3_old),
                "boto3, multipart": via(b3),
                "limit (plain boto3 GET)": limit_one,
            }
            rates: dict[str, list[float]] = {name: [] for name in configs}
            for _ in range(args.repeats):
                for name, fn in configs.items():
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(THREADS) as pool:
                        got = sum(pool.map(fn, keys))
                    assert got == total, (name, got, total)
                    rate = total / (time.perf_counter() - t0) / 1e6
                    rates[name].append(rate)
                    log.info("%s: %.0f MB/s", name, rate)
        result = {
            "objects": args.objects,
            "object_mib": args.mib,
            "threads": THREADS,
            "upload_mb_s": upload,
            "download_mb_s": {k: {"median": statistics.median(v), "runs": v} for k, v in rates.items()},
            "load": os.getloadavg(),
        }
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
