"""The machine's limit for the streaming benchmark: what the hardware allows with no data loader.

- ``read``: a plain sequential read of the same shard bytes (BenchKit's chunk files, or any
  library's with ``--shards``), 8 MiB ``readinto`` calls into one buffer, with those files evicted
  from the page cache first (``cold``, when the system allows it) and again right after (``warm``, page
  cache). Given as MB/s and as samples/s (the dataset's samples over the read time): the
  ceiling for the ``raw`` streaming mode.
- ``decode``: Pillow decode + resize to 224x224 of every JPEG, from bytes already in memory,
  in ``common.WORKERS`` processes: the ceiling for the ``decode`` mode.

    python benchmarks/limit.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORKERS,
    data_dir,
    evict,
    preset_from_args,
    save_results,
    setup_logging,
    shards_dir,
    summarize,
)
from make_data import list_samples, read_manifest  # noqa: E402

log = logging.getLogger("benchmarks.limit")

BLOCK = 8 * 1024 * 1024


def shard_files(library: str, preset) -> list[Path]:
    root = shards_dir(preset, library)
    if library == "benchkit":
        root = root / "datasets"
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json"))
    if not files:
        raise SystemExit(f"no shard files under {root}: run benchmarks/convert.py first")
    return files


def sequential_read(files: list[Path]) -> tuple[float, int]:
    """Seconds and bytes to read ``files`` one after the other with large reads."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return time.perf_counter() - t0, total


_JPEGS: list[bytes] = []


def _decode_range(bounds: tuple[int, int]) -> int:
    import io

    from PIL import Image

    lo, hi = bounds
    cpu0 = time.process_time()
    for data in _JPEGS[lo:hi]:
        Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR).tobytes()
    return hi - lo, time.process_time() - cpu0


def decode_only(jpegs: list[bytes], workers: int) -> tuple[float, float]:
    """Seconds for ``workers`` forked processes to decode+resize every JPEG (bytes in memory),
    and the CPU seconds they used."""
    global _JPEGS
    _JPEGS = jpegs
    n = len(jpegs)
    step = -(-n // (workers * 8))
    ranges = [(i, min(n, i + step)) for i in range(0, n, step)]
    with get_context("fork").Pool(workers) as pool:
        pool.map(int, range(workers))  # workers are up before the clock starts
        t0 = time.perf_counter()
        parts = pool.map(_decode_range, ranges, chunksize=1)
        seconds = time.perf_counter() - t0
    assert sum(k for k, _ in parts) == n
    return seconds, sum(c for _, c in parts)


def s3_read(preset, repeats: int, threads: int = 4) -> list[float]:
    """Seconds to GET every shard object from moto_server on loopback, ``threads`` at a time
    (boto3, bodies read in 8 MiB blocks and dropped): the ceiling for the S3 streaming runs."""
    from concurrent.futures import ThreadPoolExecutor

    from s3 import BUCKET, client, moto_server, upload_tree

    # Streaming's MDS shards are plain whole objects of the same bytes, one per shard; without
    # them (a run of BenchKit alone), BenchKit's chunk files, the same bytes again
    local, pattern = shards_dir(preset, "streaming"), "*.mds"
    if not any(local.rglob(pattern)):
        local, pattern = shards_dir(preset, "benchkit"), "*.bkc"
    with moto_server() as endpoint:
        upload_tree(endpoint, local, "limit")
        c = client(endpoint)
        keys = [f"limit/{p.relative_to(local).as_posix()}" for p in sorted(local.rglob(pattern))]

        def get(key: str) -> int:
            body = c.get_object(Bucket=BUCKET, Key=key)["Body"]
            n = 0
            while block := body.read(BLOCK):
                n += len(block)
            return n

        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                total = sum(pool.map(get, keys))
            out.append((time.perf_counter() - t0, total))
            log.info("S3 GET of %d objects, %.0f MB, %d at a time: %.0f MB/s", len(keys), total / 1e6,
                     threads, total / out[-1][0] / 1e6)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--shards", default="benchkit", help="whose shard files to read (default benchkit)")
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)
    repeats = args.repeats or preset.repeats
    manifest = read_manifest(data_dir(preset))
    n = manifest["images"]
    files = shard_files(args.shards, preset)

    cold, warm, dropped = [], [], True
    for _ in range(repeats):
        dropped &= evict(*files)
        s, total = sequential_read(files)
        cold.append((s, total))
        s2, _ = sequential_read(files)
        warm.append((s2, total))
        log.info("read %d files, %.0f MB: cold %.0f MB/s, warm %.0f MB/s", len(files), total / 1e6,
                 total / s / 1e6, total / s2 / 1e6)

    jpegs = []
    for path, _ in list_samples(data_dir(preset)):
        with open(path, "rb") as f:
            jpegs.append(f.read())
    dec, dec_cpu = [], []
    for _ in range(repeats):
        s, cpu = decode_only(jpegs, WORKERS)
        dec.append(s)
        dec_cpu.append(1e3 * cpu / n)
        log.info("decode+resize of %d JPEGs in %d processes: %.1f s, %.0f samples/s", n, WORKERS, s, n / s)

    s3 = s3_read(preset, repeats)

    total = cold[0][1]
    save_results(preset, "limit", {
        "shards": args.shards,
        "files": len(files),
        "bytes": total,
        "samples": n,
        "page_cache_dropped": dropped,
        "read_cold": {"mb_per_s": summarize([t / s / 1e6 for s, t in cold]),
                      "samples_per_s": summarize([n / s for s, _ in cold])},
        "read_warm": {"mb_per_s": summarize([t / s / 1e6 for s, t in warm]),
                      "samples_per_s": summarize([n / s for s, _ in warm])},
        "s3_read": {"threads": 4, "mb_per_s": summarize([t / s / 1e6 for s, t in s3]),
                    "samples_per_s": summarize([n / s for s, _ in s3])},
        "decode": {"workers": WORKERS, "samples_per_s": summarize([n / s for s in dec]),
                   "cpu_ms_per_sample": summarize(dec_cpu)},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
