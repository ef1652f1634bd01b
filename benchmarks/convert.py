"""Conversion: each library turns the same JPEG folder into its shard format.

Same input, same number of worker processes (``common.WORKERS``), same target shard size
(``common.SHARD_BYTES``, 64 MB); every sample is the image's JPEG bytes, unchanged, plus its
integer label. The page cache is dropped before each run (when the system allows it) so every
library starts reading the images from disk. Each run happens in a fresh interpreter.

    python benchmarks/convert.py [--quick] [--libraries benchkit,litdata,...] [--repeats N]

Libraries and what runs:

- benchkit: ``@bench.dataset`` declaration + ``benchkit.data.writer.chunk_dataset(workers=2)``
- litdata: ``litdata.optimize(fn, inputs, chunk_bytes="64MB", num_workers=2)``
- streaming: ``MDSWriter`` in 2 processes (one per half of the files, each into its own
  subdirectory) followed by ``streaming.base.util.merge_index``, the parallel pattern the
  Streaming docs give
- webdataset: ``wds.ShardWriter(maxsize=64 MB)`` in 2 processes, each writing its own shard series
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHARD_BYTES,
    WORKERS,
    PeakMemory,
    data_dir,
    dir_stats,
    emit,
    evict,
    load_results,
    preset_from_args,
    run_json,
    save_results,
    setup_logging,
    shards_dir,
    summarize,
)
from make_data import ensure_dataset, list_samples  # noqa: E402

log = logging.getLogger("benchmarks.convert")

LIBRARIES = ["benchkit", "litdata", "streaming", "webdataset"]
#: the dataset's name inside BenchKit's store layout
BENCHKIT_NAME = "images"


# --- per-library converters (each writes into ``out``, which does not exist yet) -------------


def convert_benchkit(samples: list[tuple[str, int]], out: Path, chunk_bytes: int = SHARD_BYTES) -> None:
    import benchkit as bench
    from benchkit.data.writer import chunk_dataset

    @bench.dataset(BENCHKIT_NAME, chunk_bytes=chunk_bytes)
    def images():
        for path, label in samples:
            yield bench.File(path), label

    chunk_dataset(images, out, workers=WORKERS)


def _litdata_fn(item: tuple[str, int]) -> dict:
    path, label = item
    with open(path, "rb") as f:
        return {"image": f.read(), "label": label}


def convert_litdata(samples: list[tuple[str, int]], out: Path) -> None:
    from litdata import optimize

    optimize(
        fn=_litdata_fn,
        inputs=samples,
        output_dir=str(out),
        chunk_bytes=SHARD_BYTES,
        num_workers=WORKERS,
        mode="overwrite",
        verbose=False,
    )


def _mds_part(args: tuple[int, list[tuple[str, int]], str]) -> int:
    from streaming import MDSWriter

    part, items, out = args
    with MDSWriter(
        out=str(Path(out) / f"{part:03d}"),
        columns={"image": "bytes", "label": "int"},
        size_limit=SHARD_BYTES,
    ) as writer:
        for path, label in items:
            with open(path, "rb") as f:
                writer.write({"image": f.read(), "label": label})
    return len(items)


def convert_streaming(samples: list[tuple[str, int]], out: Path) -> None:
    from streaming.base.util import merge_index

    out.mkdir(parents=True)
    parts = _split(samples, WORKERS)
    with Pool(WORKERS) as pool:
        pool.map(_mds_part, [(i, part, str(out)) for i, part in enumerate(parts)])
    merge_index(str(out), keep_local=True)


def _wds_part(args: tuple[int, list[tuple[int, str, int]], str]) -> int:
    import webdataset as wds

    part, items, out = args
    with wds.ShardWriter(
        str(Path(out) / f"shard-{part}-%05d.tar"), maxsize=SHARD_BYTES, maxcount=10**9, verbose=0
    ) as sink:
        for index, path, label in items:
            with open(path, "rb") as f:
                sink.write({"__key__": f"{index:08d}", "jpg": f.read(), "cls": label})
    return len(items)


def convert_webdataset(samples: list[tuple[str, int]], out: Path) -> None:
    out.mkdir(parents=True)
    indexed = [(i, p, label) for i, (p, label) in enumerate(samples)]
    parts = _split(indexed, WORKERS)
    with Pool(WORKERS) as pool:
        pool.map(_wds_part, [(i, part, str(out)) for i, part in enumerate(parts)])


def _split(items: list, n: int) -> list[list]:
    """``n`` contiguous, nearly equal slices (so each writer's shards hold neighbouring files)."""
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


CONVERTERS = {
    "benchkit": convert_benchkit,
    "litdata": convert_litdata,
    "streaming": convert_streaming,
    "webdataset": convert_webdataset,
}


PREIMPORT = {
    "benchkit": ["benchkit.data.declare", "benchkit.data.writer"],
    "litdata": ["litdata"],
    "streaming": ["streaming", "streaming.base.util"],
    "webdataset": ["webdataset"],
}


def count_samples(library: str, out: Path) -> int:
    """How many samples the converted dataset says it holds (from its own index)."""
    import json

    if library == "benchkit":
        return int(json.loads((out / "datasets" / BENCHKIT_NAME / "index.json").read_text())["num_samples"])
    if library == "litdata":
        return sum(c["chunk_size"] for c in json.loads((out / "index.json").read_text())["chunks"])
    if library == "streaming":
        return sum(s["samples"] for s in json.loads((out / "index.json").read_text())["shards"])
    if library == "webdataset":
        import tarfile

        n = 0
        for tar in sorted(out.glob("*.tar")):
            with tarfile.open(tar) as t:
                n += sum(1 for m in t.getmembers() if m.name.endswith(".jpg"))
        return n
    raise ValueError(library)


def run_one(library: str, quick: bool, out: Path) -> dict:
    """Convert once into ``out``; the timed part is the converter call only."""
    preset = preset_from_args(quick)
    samples = list_samples(data_dir(preset))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for module in PREIMPORT[library]:
        __import__(module)  # import time is not conversion time
    # the images leave the page cache, so every library reads them from disk
    dropped = evict(data_dir(preset))
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        CONVERTERS[library](samples, out)
    seconds = time.perf_counter() - t0
    # BenchKit fsyncs each chunk before it counts as written; the others leave dirty pages for
    # the kernel to write later. Time to the data being on disk puts them on the same footing.
    os.sync()
    synced = time.perf_counter() - t0
    # BenchKit's output root is laid out like a store; its dataset is datasets/<name>/
    size, files = dir_stats(out / "datasets" if library == "benchkit" else out)
    return {
        "library": library,
        "seconds": seconds,
        "synced_seconds": synced,
        "bytes": size,
        "files": files,
        "samples": count_samples(library, out),
        "page_cache_dropped": dropped,
        "peak_anon_mb": mem.anon_mb,
    }


def available(library: str) -> str | None:
    """None if the library can run here, else why not."""
    if library == "benchkit":
        try:
            import benchkit.data.declare  # noqa: F401
            import benchkit.data.writer  # noqa: F401
        except ImportError as e:
            return f"BenchKit's chunking is not importable yet ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--libraries", default=",".join(LIBRARIES))
    ap.add_argument("--repeats", type=int, help="runs per library (default: the preset's)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run of one library
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)

    if args.one:
        emit(run_one(args.one, args.quick, args.out))
        return 0

    manifest = ensure_dataset(data_dir(preset), preset.images)
    repeats = args.repeats or preset.repeats
    results: dict = {"images": manifest["images"], "input_bytes": manifest["bytes"], "workers": WORKERS,
                     "shard_bytes": SHARD_BYTES, "libraries": {}}
    previous = load_results(preset, "convert")
    if previous and previous.get("images") == manifest["images"]:
        results["libraries"].update(previous["libraries"])  # a run of some libraries keeps the others
    for library in args.libraries.split(","):
        why = available(library)
        if why:
            log.warning("skipping %s: %s", library, why)
            results["libraries"][library] = {"skipped": why}
            continue
        runs = []
        for r in range(repeats):
            # interleave nothing else: each run is a fresh interpreter writing a fresh directory
            out = shards_dir(preset, library)
            res = run_json(
                [sys.executable, __file__, "--one", library, "--out", str(out)]
                + (["--quick"] if args.quick else [])
            )
            if res["samples"] != manifest["images"]:
                raise RuntimeError(f"{library} converted {res['samples']} samples, expected {manifest['images']}")
            log.info("%s run %d/%d: %.1f s, %d files, %.0f MB", library, r + 1, repeats,
                     res["seconds"], res["files"], res["bytes"] / 1e6)
            runs.append(res)
        results["libraries"][library] = {
            "seconds": summarize([r["seconds"] for r in runs]),
            "synced_seconds": summarize([r["synced_seconds"] for r in runs]),
            "bytes": runs[-1]["bytes"],
            "files": runs[-1]["files"],
            "samples": runs[-1]["samples"],
            "page_cache_dropped": all(r["page_cache_dropped"] for r in runs),
            "peak_anon_mb": summarize([r["peak_anon_mb"] for r in runs]),
        }
    save_results(preset, "convert", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
