"""Checkpoints: Accelerator state packed into one object, ``checkpoints/<run-id>/<name>``.

Saving is collective (every rank calls it): each rank writes its part of
``accelerator.save_state`` (the main process the model, optimizer and scheduler; every rank its
RNG state) plus ``benchkit_state_<rank>.pt`` (epoch, step, the streaming loaders' positions)
into a shared staging directory; after a barrier the main process writes ``meta.json`` (with the
size and SHA-256 of every file), packs the directory into an uncompressed tar and uploads it once.

Loading never unpickles: the tar is extracted with the ``data`` filter into a temporary
directory, every file is checked against ``meta.json`` before anything is loaded (so a corrupt
checkpoint raises :class:`~benchkit.errors.CheckpointError` with nothing half-loaded), models
come from safetensors and every other file is read with ``torch.load(weights_only=True)``
(Accelerate's loader does so for the optimizer, scheduler and RNG files; BenchKit's own state
holds only plain containers, ints and tensors).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.errors import CheckpointError, ObjectNotFound, TrainError
from benchkit.fsutil import sha256_file
from benchkit.store import Store
from benchkit.training import runs

log = logging.getLogger(__name__)

FORMAT = 1
META = runs.CHECKPOINT_META
DEFAULT_KEEP = 3


def state_file(rank: int) -> str:
    return f"benchkit_state_{rank}.pt"


@dataclass(frozen=True)
class CheckpointInfo:
    """One stored checkpoint, as listed."""

    run_id: str
    name: str
    size: int
    epoch: int | None = None
    step: int | None = None
    time: str | None = None

    @property
    def key(self) -> str:
        return runs.checkpoint_key(self.run_id, self.name)

    @property
    def ref(self) -> str:
        return f"{self.run_id}/{self.name}"

    @property
    def short_ref(self) -> str:
        return f"{runs.short_id(self.run_id)}/{self.name}"

    @property
    def shown_epoch(self) -> int | None:
        """The epoch as users count it (from 1, as in ``epoch-0001``); None outside epochs."""
        return shown_epoch(self.epoch)


def shown_epoch(epoch: int | None) -> int | None:
    """A stored (0-based) epoch as every listing shows it: from 1, as in ``epoch-0001``."""
    return None if epoch is None else epoch + 1


def check_name(name: str) -> str:
    """A checkpoint name is one store key segment."""
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise CheckpointError(
            f"invalid checkpoint name {name!r}: use letters, digits, '-', '_' or '.', "
            "not starting with '.' and without '/'"
        )
    return name


# --- saving ------------------------------------------------------------------------------------


def save_checkpoint(
    accelerator: Any,
    store: Store,
    run_id: str,
    name: str,
    staging_dir: str | os.PathLike[str],
    state: dict[str, Any] | None = None,
    keep: int = DEFAULT_KEEP,
    meta: dict[str, Any] | None = None,
    criterion: Criterion | None = None,
) -> CheckpointInfo | None:
    """Save the accelerator state on every rank and upload it once; every rank must call this.

    ``state`` is this rank's extra state (epoch, step, loader positions): plain containers,
    numbers, strings and tensors only. ``staging_dir`` must be the same path on every rank.
    Keeps the last ``keep`` checkpoints of the run (all when ``keep <= 0``) and, with a
    ``criterion`` (the run's monitored metric at this checkpoint), also the best one by it.
    Returns the stored checkpoint's info on the main process, None elsewhere.
    """
    import torch

    check_name(name)
    staging = Path(staging_dir) / f"ckpt-{name}"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    torch.save(state or {}, staging / state_file(accelerator.process_index))
    accelerator.wait_for_everyone()
    info = None
    if accelerator.is_main_process:
        try:
            info = _pack_and_upload(
                store, run_id, name, staging, accelerator.num_processes, meta or {}
            )
            _record_and_prune(store, run_id, info, keep, criterion)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    return info


def _pack_and_upload(
    store: Store, run_id: str, name: str, staging: Path, world_size: int, meta: dict[str, Any]
) -> CheckpointInfo:
    files = {
        str(p.relative_to(staging)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(staging.rglob("*"))
        if p.is_file()
    }
    when = runs.utc_now()
    document = {
        **meta,
        "format": FORMAT,
        "run_id": run_id,
        "name": name,
        "world_size": world_size,
        "time": when,
        "files": files,
    }
    (staging / META).write_text(json.dumps(document, indent=1, sort_keys=True))
    fd, tar_path = tempfile.mkstemp(prefix=".ckpt-", suffix=".tar", dir=staging.parent)
    os.close(fd)
    try:
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(staging / META, arcname=META)
            for rel in files:
                tar.add(staging / rel, arcname=rel)
        size = os.path.getsize(tar_path)
        t0 = time.perf_counter()
        store.put_file(runs.checkpoint_key(run_id, name), tar_path)
        log.info(
            "checkpoint %s/%s: %d bytes uploaded in %.2fs",
            run_id,
            name,
            size,
            time.perf_counter() - t0,
        )
    finally:
        os.unlink(tar_path)
    return CheckpointInfo(run_id, name, size, meta.get("epoch"), meta.get("step"), when)


@dataclass(frozen=True)
class Criterion:
    """A run's evaluation criterion at one checkpoint: ``metric`` was ``value``, and ``mode``
    ("max" or "min") says which way is better."""

    metric: str
    mode: str
    value: float

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def best_checkpoint(checkpoints: list[dict[str, Any]], criterion: Criterion) -> str | None:
    """The name of the best of ``checkpoints`` by their recorded value of ``criterion``'s
    metric (the later of equal ones; NaN never wins)."""
    best: dict[str, Any] | None = None
    for c in checkpoints:
        v = c.get("value")
        if c.get("metric") != criterion.metric or not isinstance(v, (int, float)) or v != v:
            continue
        if best is None or not criterion.better(best["value"], v):
            best = c
    return best["name"] if best else None


def _record_and_prune(
    store: Store, run_id: str, info: CheckpointInfo, keep: int, criterion: Criterion | None = None
) -> None:
    doomed: list[str] = []

    def add(rec: runs.RunRecord) -> None:
        rec.checkpoints = [c for c in rec.checkpoints if c.get("name") != info.name]
        entry = {"name": info.name, "epoch": info.epoch, "step": info.step, "time": info.time,
                 "size": info.size}  # fmt: skip
        if criterion is not None:
            entry.update(metric=criterion.metric, value=criterion.value)
        rec.checkpoints.append(entry)
        best = best_checkpoint(rec.checkpoints, criterion) if criterion else None
        rec.best_checkpoint = best
        if keep > 0:  # the last `keep`, and the best besides
            old = rec.checkpoints[:-keep]
            doomed.extend(c["name"] for c in old if c.get("name") != best)
            rec.checkpoints = [c for c in rec.checkpoints if c["name"] not in doomed]

    # a run record that cannot be read is rebuilt (with this checkpoint), never blanked
    runs.update_record(store, run_id, add, create=lambda: runs.rebuild_record(store, run_id))
    for name in doomed:  # after the record no longer lists them
        store.delete(runs.checkpoint_key(run_id, name))
        log.info("checkpoint %s/%s deleted (keep_checkpoints=%d)", run_id, name, keep)


# --- finding -----------------------------------------------------------------------------------


def list_checkpoints(store: Store, run_id: str | None = None) -> list[CheckpointInfo]:
    """Stored checkpoints, by run (oldest run first) and in the order each run saved them."""
    catalog = store.catalog()
    if catalog is not None:
        return [CheckpointInfo(**c) for c in catalog.checkpoints(run_id)]
    prefix = runs.CHECKPOINTS + (f"{run_id}/" if run_id else "")
    by_run: dict[str, list[str]] = {}
    for key in store.list(prefix):
        parts = key.split("/")
        if len(parts) == 3:
            by_run.setdefault(parts[1], []).append(parts[2])
    out: list[CheckpointInfo] = []
    for rid in sorted(by_run):
        try:
            saved = runs.load_record(store, rid).checkpoints
        except runs.RecordDamaged as e:  # list them in name order; the sizes come from the store
            log.warning("%s", e)
            saved = []
        except TrainError:  # checkpoints of a run without a record (uploaded by a script)
            saved = []
        order = {c["name"]: i for i, c in enumerate(saved)}
        meta = {c["name"]: c for c in saved}
        for name in sorted(by_run[rid], key=lambda n: (order.get(n, -1), n)):
            m = meta.get(name, {})
            size = m.get("size")
            if size is None:
                size = store.stat(runs.checkpoint_key(rid, name)).size
            out.append(
                CheckpointInfo(rid, name, size, m.get("epoch"), m.get("step"), m.get("time"))
            )
    return out


def latest_checkpoint(store: Store, run_id: str) -> CheckpointInfo | None:
    found = list_checkpoints(store, run_id)
    return found[-1] if found else None


def resolve_checkpoint(
    store: Store, ref: str, run_id: str | None = None, rows: bool = True
) -> CheckpointInfo:
    """A checkpoint from ``RUN/NAME`` (RUN: an id, short id or name), a name (within
    ``run_id``, else unique in the store), or, with ``rows``, a row number of
    ``checkpoints list``."""
    if "/" in ref:
        run_ref, _, ref = ref.rpartition("/")
        run_id = runs.resolve_run(store, run_ref, rows=False)
    found = list_checkpoints(store, run_id)
    named = [c for c in found if c.name == ref]
    if ref.isdigit() and not named:
        if not rows:
            raise CheckpointError(
                f"'{ref}' is not a checkpoint name (row numbers are not accepted here: they "
                "shift as checkpoints come and go); give NAME or RUN/NAME from "
                "`benchkit checkpoints list`"
            )
        if 1 <= int(ref) <= len(found):
            return found[int(ref) - 1]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        refs = ", ".join(c.short_ref for c in named)
        raise CheckpointError(f"checkpoint name '{ref}' is in several runs ({refs}); give RUN/NAME")
    where = f" of run {run_id}" if run_id else ""
    raise CheckpointError(
        f"no checkpoint '{ref}'{where} in store {store.url}; list them with `benchkit checkpoints list`"
    )


def delete_checkpoint(store: Store, info: CheckpointInfo) -> None:
    """Delete a stored checkpoint and drop it from its run's record."""
    store.delete(info.key)
    if not store.exists(runs.run_key(info.run_id)):
        return

    def drop(rec: runs.RunRecord) -> None:
        rec.checkpoints = [c for c in rec.checkpoints if c.get("name") != info.name]
        if rec.best_checkpoint == info.name:
            rec.best_checkpoint = None

    runs.update_record(store, info.run_id, drop)


# --- loading -----------------------------------------------------------------------------------


def fetch_checkpoint(store: Store, run_id: str, name: str, dest: str | os.PathLike[str]) -> Path:
    """Download and unpack a checkpoint into the new directory ``dest``, verified; returns it.

    Raises :class:`CheckpointError` when it is missing, truncated, or any file differs from
    its recorded checksum, or when ``dest`` exists and is not empty; ``dest`` is then left
    untouched.
    """
    key = runs.checkpoint_key(run_id, check_name(name))
    what = f"checkpoint '{run_id}/{name}' in store {store.url}"
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=dest.parent))
    try:
        tar_path = work / "checkpoint.tar"
        try:
            store.get_file(key, tar_path)
        except ObjectNotFound as e:
            raise CheckpointError(
                f"{what} does not exist; list checkpoints with `benchkit checkpoints list --run {run_id}`"
            ) from e
        out = work / "state"
        try:
            with tarfile.open(tar_path, "r:") as tar:
                tar.extractall(out, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise CheckpointError(
                f"{what} is corrupt or truncated ({e}); delete it and use an earlier one"
            ) from e
        verify_dir(out, what)
        if dest.exists():
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            else:  # never delete what someone else put there
                raise CheckpointError(
                    f"{dest} already exists; give another destination or remove it"
                )
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def verify_dir(path: Path, what: str) -> dict[str, Any]:
    """Check every file of an unpacked checkpoint against its ``meta.json``; returns the meta."""
    try:
        meta = json.loads((path / META).read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{what} has no readable {META} ({e}); it is not a BenchKit checkpoint"
        ) from e
    if meta.get("format", 0) > FORMAT:
        raise CheckpointError(
            f"{what} has format {meta.get('format')}; upgrade BenchKit to load it"
        )
    for rel, expect in files.items():
        p = path / rel
        if not p.is_file():
            raise CheckpointError(f"{what} is incomplete: {rel} is missing")
        if p.stat().st_size != expect["size"] or sha256_file(p) != expect["sha256"]:
            raise CheckpointError(
                f"{what} is corrupt: {rel} does not match its checksum; delete it and use an earlier one"
            )
    return meta


def load_checkpoint_dir(
    accelerator: Any, path: str | os.PathLike[str], what: str
) -> dict[str, Any]:
    """Load a verified, unpacked checkpoint into the accelerator; returns this rank's extra
    state (from ``benchkit_state_<rank>.pt``, or rank 0's when the world size changed)."""
    import torch

    path = Path(path)
    rng = path / f"random_states_{accelerator.process_index}.pkl"
    if rng.exists():
        _check_safe_load(rng, what)
    try:
        accelerator.load_state(str(path))
    except Exception as e:
        raise CheckpointError(f"loading {what} failed: {type(e).__name__}: {e}") from e
    mine = path / state_file(accelerator.process_index)
    if not mine.exists():
        mine = path / state_file(0)
    if not mine.exists():
        return {}
    try:
        return torch.load(mine, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{what}: {mine.name} could not be loaded safely: {e}") from e


def _check_safe_load(path: Path, what: str) -> None:
    """Accelerate ignores an RNG file it cannot load; fail loudly instead, before loading."""
    from accelerate.utils.other import load

    try:
        load(path, map_location="cpu")
    except Exception as e:
        raise CheckpointError(
            f"{what}: {path.name} cannot be loaded with weights_only=True ({e}); refusing to unpickle it"
        ) from e
