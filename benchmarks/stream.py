"""Streaming: samples per second over an epoch through a DataLoader, for every library.

Every library reads the shards that ``convert.py`` wrote, with the same ``batch_size``
(``common.BATCH_SIZE``), ``num_workers`` (``common.WORKERS``) and shuffling on, in two modes:

- ``raw``: each sample reaches the training loop as (JPEG bytes, label), no decode;
- ``decode``: Pillow decodes the JPEG and resizes it to 224x224, giving a uint8 tensor.

and from two places:

- ``local``: the shard directory on the local disk (page cache dropped before epoch 1 when the
  system allows it, so epoch 1 reads the disk and epoch 2 the page cache);
- ``s3``: the same shards uploaded to ``moto_server`` on 127.0.0.1, read through each
  library's own S3 client into an empty cache directory (epoch 1 downloads, epoch 2 reads
  whatever the library cached);
- ``server``: BenchKit only (no other library speaks its protocol): BenchKit's shards uploaded
  to a Bench server (``python -m benchkit server`` on 127.0.0.1, SQLite and blobs in a
  temporary directory) and read through the ``http://`` store into an empty cache, like ``s3``.

Plus ``plain``: a map-style ``Dataset`` reading one JPEG file per sample (local only), the
baseline users start from. Each (library, mode, store) is measured in a fresh interpreter;
repeats are interleaved across libraries so background load hits all of them alike. Every run
checks the sample count, the sum of labels and (raw mode) the total bytes of the epoch against
the dataset, so a library that drops or repeats samples fails loudly instead of looking fast.

    python benchmarks/stream.py [--quick] [--libraries ...] [--modes raw,decode] [--stores local,s3,server]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BATCH_SIZE,
    IMAGE_SIZE,
    SEED,
    WORK,
    WORKERS,
    PeakMemory,
    data_dir,
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
from convert import BENCHKIT_NAME  # noqa: E402
from make_data import list_samples, read_manifest  # noqa: E402

log = logging.getLogger("benchmarks.stream")

LIBRARIES = ["benchkit", "litdata", "streaming", "webdataset", "plain"]
MODES = ["raw", "decode"]
STORES = ["local", "s3", "server"]
EPOCHS = 2


# --- what every library does to a sample (module level: DataLoader workers pickle these) ------


def decode_jpeg(f: Any) -> Any:
    """Pillow decode + resize to 224x224 -> uint8 CHW tensor. ``f``: bytes or a binary file."""
    import numpy as np
    import torch
    from PIL import Image

    if isinstance(f, (bytes, bytearray, memoryview)):
        f = io.BytesIO(f)
    img = Image.open(f).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def finish(data: bytes | memoryview, label: int, mode: str) -> tuple[Any, int]:
    # LitData hands out memoryviews into its chunk; the training loop gets real bytes
    return (bytes(data), int(label)) if mode == "raw" else (decode_jpeg(data), int(label))


class BenchKitTransform:
    """BenchKit calls the transform with the sample's fields: (ChunkFile, label)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any, label: int) -> tuple[Any, int]:
        if self.mode == "raw":
            # the stored file's bytes as BenchKit hands them out: a read-only file object over
            # them (len() is its size), which crosses from the workers in shared memory
            return image, int(label)
        return decode_jpeg(image), int(label)  # PIL reads the ChunkFile directly


class DictTransform:
    """LitData and Streaming give a dict {"image": bytes, "label": int}."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, sample: dict) -> tuple[Any, int]:
        return finish(sample["image"], sample["label"], self.mode)


class WdsTransform:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, sample: tuple[bytes, bytes]) -> tuple[Any, int]:
        data, cls = sample
        return finish(data, int(cls), self.mode)


class PlainFiles:
    """The baseline: a map-style Dataset over the image files, one open+read per sample."""

    def __init__(self, samples: list[tuple[str, int]], mode: str) -> None:
        self.samples = samples
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            return finish(f.read(), label, self.mode)


def _streaming_dataset_class():
    from streaming import StreamingDataset

    class MDSImages(StreamingDataset):
        def __init__(self, mode: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._transform = DictTransform(mode)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return self._transform(super().__getitem__(i))

    return MDSImages


# --- loaders -------------------------------------------------------------------------------


def benchkit_loader(url: str, mode: str, batch_size: int = BATCH_SIZE, workers: int = WORKERS) -> Any:
    """BenchKit's loader for the dataset chunked by convert.py into the store at ``url``.

    The original's helper: a StreamingDataLoader over ``open_dataset(...)`` that prefetches
    remote chunks from the main process (LitData and Streaming also get their own loader).
    """
    import benchkit as bench

    return bench.get_dataset(None, url, BENCHKIT_NAME, batch_size, workers, shuffle=True, seed=SEED,
                             transform=BenchKitTransform(mode), persistent_workers=False)


def build_loader(library: str, mode: str, store: str, preset_name: str, endpoint: str | None,
                 cache: Path) -> Any:
    """The DataLoader for one configuration (shuffle on, same batch size and workers)."""
    import torch
    from torch.utils.data import DataLoader

    preset = preset_from_args(preset_name == "quick")
    shards = shards_dir(preset, library)
    common = {"batch_size": BATCH_SIZE, "num_workers": WORKERS, "persistent_workers": False}

    if library == "plain":
        if store != "local":
            raise ValueError("the plain baseline reads local files only")
        ds = PlainFiles(list_samples(data_dir(preset)), mode)
        return DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(SEED), **common)

    if library == "benchkit":
        if store == "server":
            url = endpoint  # the API key comes in BENCHKIT_API_KEY
        elif store == "local":
            url = str(shards)
        else:
            url = f"s3://{s3_bucket()}/benchkit?endpoint={endpoint}"
        return benchkit_loader(url, mode)
    if store == "server":
        raise ValueError("only BenchKit reads from a Bench server")

    if library == "litdata":
        from litdata import StreamingDataLoader, StreamingDataset

        if store == "local":
            ds = StreamingDataset(str(shards), shuffle=True, seed=SEED, transform=DictTransform(mode))
        else:
            # LitData fetches chunks with obstore, whose client refuses plain-http endpoints and
            # takes no option for it through LitData: allow it, as a MinIO/moto user must
            from litdata.streaming import downloader

            downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
            ds = StreamingDataset(
                f"s3://{s3_bucket()}/litdata", cache_dir=str(cache), shuffle=True, seed=SEED,
                transform=DictTransform(mode),
                storage_options={"endpoint_url": endpoint, "region_name": "us-east-1"},
            )
        return StreamingDataLoader(ds, **common)

    if library == "streaming":
        from streaming import StreamingDataLoader

        cls = _streaming_dataset_class()
        if store == "local":
            ds = cls(mode, local=str(shards), shuffle=True, shuffle_seed=SEED, batch_size=BATCH_SIZE)
        else:
            ds = cls(mode, remote=f"s3://{s3_bucket()}/streaming", local=str(cache), shuffle=True,
                     shuffle_seed=SEED, batch_size=BATCH_SIZE)
        return StreamingDataLoader(ds, **common)

    if library == "webdataset":
        import webdataset as wds

        tars = sorted(p.name for p in shards.glob("*.tar"))
        if store == "local":
            urls = [str(shards / t) for t in tars]
        else:
            here = Path(__file__).resolve().parent
            urls = [f"pipe:{sys.executable} {here / 's3.py'} cat {s3_bucket()} webdataset/{t}" for t in tars]
        ds = (
            wds.WebDataset(urls, shardshuffle=len(urls), seed=SEED, workersplitter=wds.split_by_worker,
                           empty_check=False)
            .shuffle(1000)
            .to_tuple("jpg", "cls")
            .map(WdsTransform(mode))
        )
        return DataLoader(ds, **common)

    raise ValueError(f"unknown library {library!r}")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process plus its reaped children (DataLoader workers,
    WebDataset's pipe helpers): a cost that background load on the machine barely changes."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def preimport(library: str) -> None:
    import torch.utils.data  # noqa: F401

    modules = {"benchkit": ["benchkit.data.stream", "benchkit.data.loader"], "litdata": ["litdata"],
               "streaming": ["streaming"], "webdataset": ["webdataset"], "plain": []}[library]
    for m in modules:
        __import__(m)


def s3_bucket() -> str:
    from s3 import BUCKET

    return BUCKET


def run_one(library: str, mode: str, store: str, preset_name: str, endpoint: str | None) -> dict:
    """Two epochs of one configuration in this interpreter; the JSON line run_json() reads."""
    preset = preset_from_args(preset_name == "quick")
    manifest = read_manifest(data_dir(preset))
    expected = {"samples": manifest["images"], "labels": sum(i % 10 for i in range(manifest["images"])),
                "bytes": manifest["bytes"]}
    cache = Path(tempfile.mkdtemp(prefix=f"{library}-", dir=WORK / preset.name / "cache"))
    # BenchKit keeps its chunk cache under BENCHKIT_HOME: a fresh one per run, like the others'
    os.environ["BENCHKIT_HOME"] = str(cache / "benchkit-home")
    try:
        preimport(library)  # library import time is not part of the setup figure
        # epoch 1 reads the disk: the data files leave the page cache (and nothing else does)
        dropped = evict(data_dir(preset) if library == "plain" else shards_dir(preset, library))
        t0 = time.perf_counter()
        loader = build_loader(library, mode, store, preset_name, endpoint, cache)
        setup_s = time.perf_counter() - t0
        epochs = []
        for epoch in range(EPOCHS):
            if library == "benchkit":
                loader.set_epoch(epoch)
            n = labels = nbytes = 0
            first = None
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                it = iter(loader)
                for batch, y in it:
                    if first is None:
                        first = time.perf_counter() - t0
                    n += len(y)
                    labels += int(y.sum())
                    if mode == "raw":
                        nbytes += sum(len(b) for b in batch)
                seconds = time.perf_counter() - t0
                del it  # the workers are joined here, so their CPU time is counted
            cpu = cpu_seconds() - cpu0
            epochs.append({"seconds": seconds, "samples": n, "labels": labels,
                           "bytes": nbytes if mode == "raw" else None, "first_batch_s": first,
                           "samples_per_s": n / seconds, "cpu_s": cpu, "cpu_ms_per_sample": 1e3 * cpu / n,
                           "peak_anon_mb": mem.anon_mb, "peak_file_mb": mem.file_mb})
            got = {"samples": n, "labels": labels, "bytes": nbytes if mode == "raw" else expected["bytes"]}
            if got != expected:
                raise SystemExit(f"{library}/{mode}/{store} epoch {epoch + 1}: got {got}, expected {expected}")
        return {"library": library, "mode": mode, "store": store, "setup_s": setup_s, "epochs": epochs,
                "page_cache_dropped": dropped}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def upload_all(endpoint: str, preset, libraries: list[str]) -> None:
    """Put each library's shards on the S3 endpoint, with the library's own uploader when it has
    a layout of its own (BenchKit splits objects over 32 MiB into parts), else boto3."""
    from s3 import endpoint_env, upload_tree

    for library in libraries:
        if library == "plain":
            continue
        local = shards_dir(preset, library)
        t0 = time.perf_counter()
        if library == "benchkit":
            os.environ.update(endpoint_env(endpoint))
            from benchkit.store import LocalStore, open_store

            src = LocalStore(local)
            dst = open_store(f"s3://{s3_bucket()}/benchkit?endpoint={endpoint}")
            total = 0
            for key in src.list(""):
                path = src.local_path(key)
                dst.put_file(key, path)
                total += path.stat().st_size
        else:
            total = upload_tree(endpoint, local, library)
        log.info("uploaded %s: %.0f MB in %.1f s", library, total / 1e6, time.perf_counter() - t0)


@contextmanager
def bench_server(work: Path, preset) -> Iterator[tuple[str, dict[str, str]]]:
    """A Bench server on a free loopback port (``benchmarks/server.py`` starts it) holding
    BenchKit's shards; yields its URL and the environment its clients need (the API key)."""
    from server import start_server

    from benchkit.store import LocalStore
    from benchkit.store.http import HttpStore

    data = Path(tempfile.mkdtemp(prefix="bench-server-", dir=work))
    proc, url, key = start_server(data)
    try:
        src, dst = LocalStore(shards_dir(preset, "benchkit")), HttpStore(url, key)
        t0, total = time.perf_counter(), 0
        for name in src.list(""):
            path = src.local_path(name)
            dst.put_file(name, path)
            total += path.stat().st_size
        log.info("uploaded benchkit to the server: %.0f MB in %.1f s", total / 1e6, time.perf_counter() - t0)
        yield url, {"BENCHKIT_API_KEY": key}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def available(library: str, preset) -> str | None:
    if library == "plain":
        return None
    if library == "benchkit":
        try:
            import benchkit.data.stream  # noqa: F401
        except ImportError as e:
            return f"BenchKit's streaming is not importable yet ({e})"
    if not shards_dir(preset, library).exists():
        return f"no shards at {shards_dir(preset, library)}: run benchmarks/convert.py first"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--libraries", default=",".join(LIBRARIES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--max-seconds", type=int, default=900,
                    help="give up on a configuration whose two epochs take longer (default 900)")
    ap.add_argument("--one", nargs=3, metavar=("LIBRARY", "MODE", "STORE"), help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)
    (WORK / preset.name / "cache").mkdir(parents=True, exist_ok=True)

    if args.one:
        lib, mode, store = args.one
        emit(run_one(lib, mode, store, preset.name, args.endpoint))
        return 0

    from s3 import endpoint_env, moto_server

    libraries = []
    skipped = {}
    for lib in args.libraries.split(","):
        why = available(lib, preset)
        if why:
            log.warning("skipping %s: %s", lib, why)
            skipped[lib] = why
        else:
            libraries.append(lib)
    repeats = args.repeats or preset.repeats
    runs: dict[str, list[dict]] = {}
    too_slow: dict[str, int] = {}

    def measure(store: str, endpoint: str | None, env: dict[str, str] | None = None) -> None:
        env = env if env is not None else (endpoint_env(endpoint) if endpoint else {})
        for mode in args.modes.split(","):
            for r in range(repeats):
                for lib in libraries:
                    if (lib == "plain" and store != "local") or (lib != "benchkit" and store == "server"):
                        continue
                    cmd = [sys.executable, __file__, "--one", lib, mode, store] + (["--quick"] if args.quick else [])
                    if endpoint:
                        cmd += ["--endpoint", endpoint]
                    key = f"{lib}|{mode}|{store}"
                    if key in too_slow:
                        continue
                    try:
                        res = run_json(cmd, env=env, timeout=args.max_seconds)
                    except subprocess.TimeoutExpired:
                        # one configuration must not hold the whole session hostage
                        too_slow[key] = args.max_seconds
                        log.warning("%s %s %s: two epochs took longer than %d s; not measured further",
                                    lib, mode, store, args.max_seconds)
                        save(partial=True)
                        continue
                    e1, e2 = res["epochs"]
                    log.info("%s %s %s run %d/%d: epoch 1 %.0f samples/s, epoch 2 %.0f samples/s",
                             lib, mode, store, r + 1, repeats, e1["samples_per_s"], e2["samples_per_s"])
                    runs.setdefault(f"{lib}|{mode}|{store}", []).append(res)
                    save(partial=True)  # a crash later keeps what was measured

    previous = load_results(preset, "stream")
    kept = dict(previous["results"]) if previous and previous.get("repeats") == repeats else {}

    def save(partial: bool = False) -> dict:
        table = dict(kept)  # a run of some libraries/modes/stores keeps the others' results
        for key, rs in runs.items():
            lib, mode, store = key.split("|")
            table[key] = {
                "library": lib, "mode": mode, "store": store, "runs": len(rs),
                "epoch1": summarize([r["epochs"][0]["samples_per_s"] for r in rs]),
                "epoch2": summarize([r["epochs"][1]["samples_per_s"] for r in rs]),
                "first_batch_s": summarize([r["epochs"][0]["first_batch_s"] for r in rs]),
                "setup_s": summarize([r["setup_s"] for r in rs]),
                **({"cpu_ms1": summarize([r["epochs"][0]["cpu_ms_per_sample"] for r in rs]),
                    "cpu_ms2": summarize([r["epochs"][1]["cpu_ms_per_sample"] for r in rs])}
                   if all("cpu_ms_per_sample" in r["epochs"][0] for r in rs) else {}),
                **({"mem_anon_mb": summarize([max(e["peak_anon_mb"] for e in r["epochs"]) for r in rs]),
                    "mem_file_mb": summarize([max(e["peak_file_mb"] for e in r["epochs"]) for r in rs])}
                   if all("peak_anon_mb" in r["epochs"][0] for r in rs) else {}),
                "samples": rs[0]["epochs"][0]["samples"],
                "page_cache_dropped": all(r["page_cache_dropped"] for r in rs),
            }
        for key, limit_s in too_slow.items():
            if key not in runs:
                lib, mode, store = key.split("|")
                table[key] = {"library": lib, "mode": mode, "store": store, "timed_out_s": limit_s}
        save_results(preset, "stream", {"batch_size": BATCH_SIZE, "workers": WORKERS, "repeats": repeats,
                                         "partial": partial, "skipped": skipped, "results": table})
        return table

    stores = args.stores.split(",")
    if "local" in stores:
        measure("local", None)
    if "s3" in stores:
        with moto_server(WORK / preset.name / "moto.log") as endpoint:
            upload_all(endpoint, preset, libraries)
            measure("s3", endpoint)
    if "server" in stores and "benchkit" in libraries:
        with bench_server(WORK / preset.name, preset) as (url, env):
            measure("server", url, env)

    table = save()
    print(json.dumps({k: (v["epoch1"]["median"], v["epoch2"]["median"]) for k, v in table.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
