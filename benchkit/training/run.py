"""``bench.Run``: what a ``@bench.train`` function receives.

A run owns the Hugging Face ``Accelerator``, the :class:`~benchkit.training.tracker.BenchTracker`
recording it in the store, its loaders and its checkpoints. ``python -m benchkit run`` builds
one per process; tests and notebooks can build one directly::

    with bench.Run(config={"epochs": 2, "batch_size": 8}, store=tmp_dir, cpu=True) as run:
        train(run)

Rank-0-only work (logging, progress bars, printing, uploading) is done here so user code does
not need ``if rank == 0``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchkit.console import console, print_hint
from benchkit.errors import BenchKitError, CheckpointError, TrainError
from benchkit.store import Store, open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs
from benchkit.training.journal import apply_final, save_pending_record

log = logging.getLogger(__name__)

#: With several processes, the ranks check whether one of them was asked to stop every this
#: many step boundaries (one all-reduce of one number).
STOP_CHECK_EVERY = 10


class StopRun(KeyboardInterrupt):
    """Raised at a step boundary after a requested stop (SIGTERM): the run is checkpointed and
    ends as ``interrupted``. A KeyboardInterrupt, so code that handles Ctrl-C handles it."""


#: Config keys every run understands, with their defaults.
IMPLICIT_CONFIG: dict[str, Any] = {"keep_checkpoints": ckpt.DEFAULT_KEEP, "seed": None}


class Config(dict):
    """The run's config: a dict that also allows ``config.lr``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"config has no key {key!r}; known keys: {', '.join(sorted(self))}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class TrackedLoader:
    """A loader the run knows about: it sets the epoch, remembers whether an epoch is in
    progress (for checkpoint names and resume), moves batches to the device when asked, and
    exposes ``state_dict``/``load_state_dict`` of the loader it wraps. Every other attribute
    is the wrapped loader's."""

    def __init__(
        self,
        loader: Any,
        device: Any = None,
        name: str | None = None,
        streaming: bool = True,
        run: Run | None = None,
    ) -> None:
        self.loader = loader
        self.run = run
        self.streaming = streaming
        self.device = device
        self.name = name
        self.in_progress = False
        self.batches = 0
        #: (generator, seed): the loader's generator, re-seeded with (seed, epoch) by set_epoch
        self.reseed: tuple[Any, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        self.in_progress = True
        self.batches = 0
        if self.device is not None:
            from accelerate.utils import send_to_device

            def place(batch: Any) -> Any:
                return send_to_device(batch, self.device, non_blocking=True)
        else:

            def place(batch: Any) -> Any:
                return batch

        batches = iter(self.loader)
        while True:
            # a step boundary: the previous batch is done and the next one not yet taken, so
            # a checkpoint here resumes exactly (see Run.request_stop)
            if self.batches and self.run is not None:
                self.run.stop_if_requested()
            try:
                batch = next(batches)
            except StopIteration:
                break
            self.batches += 1
            yield place(batch)
        self.in_progress = False

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, key: str) -> Any:
        return getattr(self.loader, key)

    def set_epoch(self, epoch: int) -> None:
        if self.reseed is not None:
            generator, seed = self.reseed
            generator.manual_seed((seed * 1_000_003 + epoch) % (1 << 63))
        for obj in (
            self.loader,
            getattr(self.loader, "dataset", None),
            getattr(self.loader, "sampler", None),
            getattr(self.loader, "batch_sampler", None),
        ):
            fn = getattr(obj, "set_epoch", None)
            if callable(fn):
                fn(epoch)
                return

    @property
    def stateful(self) -> bool:
        # loaders prepared by accelerate keep their own state in save_state
        return (
            self.streaming
            and callable(getattr(self.loader, "state_dict", None))
            and callable(getattr(self.loader, "load_state_dict", None))
        )

    def state_dict(self) -> Any:
        return self.loader.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.loader.load_state_dict(state)


def needs_cpu_backend() -> bool:
    """True under torchrun on a machine without a GPU: Accelerate only sets up multi-process
    CPU training (gloo) when told to use the CPU."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return world > 1 and not torch.cuda.is_available()


def is_streaming_loader(obj: Any) -> bool:
    """True for BenchKit's streaming loaders: already sharded per rank, so they must not go
    through ``accelerator.prepare`` (which would shard them again)."""
    from benchkit.data.loader import StreamingDataLoader

    return isinstance(obj, StreamingDataLoader)


class Run:
    """One training run in one process: config, accelerator, tracker, loaders, checkpoints.

    Args:
        config: the run's config (``epochs``, ``batch_size``, ... plus ``keep_checkpoints``
            and ``seed``, which every run understands).
        name: the run's name (``runs list``; ``--resume`` finds the latest run of a name).
        store: store URL or object for records, checkpoints and datasets (default: configured).
        run_id: the id to use; on resume the id of the run to continue. Default: a new id
            (``BENCHKIT_RUN_ID`` when ``benchkit run`` launched several processes).
        resume: continue ``run_id`` from its latest checkpoint (loaded when ``epochs()`` starts).
        cpu, mixed_precision: passed to ``Accelerator``.
        log_with: more Accelerate trackers to log to besides BenchKit's (e.g. ``"tensorboard"``).
        datasets: declared datasets by name (``run.loader`` streams them with their transform).
        project: project name given to the trackers.
        output_dir: local directory for this run's files (default: under the BenchKit data dir).
        accelerator_kwargs: more keyword arguments for ``Accelerator``.
        code_version, git, module: recorded in the run record (``benchkit run`` fills them
            in; ``module`` is the training module's path, which ``run --resume ID`` reuses).
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        name: str = "run",
        store: str | Store | None = None,
        run_id: str | None = None,
        resume: bool = False,
        cpu: bool = False,
        mixed_precision: str | None = None,
        log_with: Any = None,
        datasets: dict[str, Any] | None = None,
        project: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        accelerator_kwargs: dict[str, Any] | None = None,
        code_version: int | None = None,
        git: dict[str, Any] | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        module: str | None = None,
    ) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import broadcast_object_list, set_seed

        from benchkit.training.tracker import BenchTracker

        self.name = name
        self.store = open_store(store)
        self.config = Config({**IMPLICIT_CONFIG, **(config or {})})
        self.datasets = dict(datasets or {})
        self.monitor = monitor
        self.mode = (mode or "max") if monitor else None
        self._monitor_value: Any = None
        self._finished = False

        cpu = cpu or needs_cpu_backend()
        state = PartialState(cpu=cpu)
        run_id = run_id or os.environ.get("BENCHKIT_RUN_ID")
        if resume and not run_id:
            raise TrainError("resume=True needs the run_id of the run to continue")
        seed = self.config.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        if state.num_processes > 1:  # every rank must agree on the id and the seed
            shared = [run_id or runs.new_run_id(name), seed]
            broadcast_object_list(shared, from_process=0)
            run_id, seed = shared
        self.run_id: str = run_id or runs.new_run_id(name)
        self.config["seed"] = int(seed)

        from benchkit.settings import get_paths

        self.output_dir = Path(output_dir or get_paths().data / "runs" / self.run_id)
        self.output_dir.mkdir(parents=True, exist_ok=True)

        self.tracker = BenchTracker(name, store=self.store, run_id=self.run_id)
        extra = (
            log_with if isinstance(log_with, (list, tuple)) else ([log_with] if log_with else [])
        )
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision,
            log_with=[self.tracker, *extra],
            project_dir=str(self.output_dir),
            **(accelerator_kwargs or {}),
        )
        set_seed(self.config["seed"])

        self._resume_from: ckpt.CheckpointInfo | None = None
        if self.is_main_process:
            provenance = {"code_version": code_version, "git": git, "monitor": self.monitor,
                          "mode": self.mode, "datasets": sorted(self.datasets)}  # fmt: skip
            if module is not None:
                provenance["module"] = module
            self._open_record(resume, provenance)
        if resume:
            self._resume_from = ckpt.latest_checkpoint(self.store, self.run_id)
        self.accelerator.init_trackers(project or "benchkit", config=dict(self.config))

        self.step = 0
        self.epoch: int | None = None
        self._start_epoch = 0
        self._loaders: list[TrackedLoader] = []
        self._pending_loader_states: dict[str, Any] | None = None
        self._last_values: dict[str, Any] = {}
        self._values_version = 0
        self._stop_reason: str | None = None
        self._boundary_count = 0
        self._last_checkpoint_step: int | None = None

    # --- the record ------------------------------------------------------------------------

    def _open_record(self, resume: bool, provenance: dict[str, Any]) -> None:
        def fill(rec: runs.RunRecord) -> None:
            rec.world_size = self.accelerator.num_processes
            rec.host = socket.gethostname()
            for key, value in provenance.items():
                setattr(rec, key, value)

        if not resume:
            rec = runs.RunRecord(id=self.run_id, name=self.name, config=dict(self.config))
            fill(rec)
            runs.save_record(self.store, rec)
            return

        def reopen(rec: runs.RunRecord) -> None:
            rec.status = runs.RUNNING
            rec.ended = None
            rec.traceback = None
            rec.resumed.append(runs.utc_now())
            rec.config = dict(self.config)
            fill(rec)

        runs.update_record(self.store, self.run_id, reopen)

    def finish(self, status: str = runs.FINISHED, error: str | None = None) -> None:
        """Flush the trackers and record the final status (``finished``, ``failed``,
        ``interrupted``); called by ``benchkit run`` and by ``with Run(...)``. Metrics the
        store did not take in time stay in the run's journal and the record says so
        (``unsent``); a record the store refuses to write is kept with them, and
        ``benchkit sync`` writes both."""
        if self._finished:
            return
        self._finished = True
        try:
            self.accelerator.end_training()
        finally:
            if self.is_main_process:
                self._close_record(status, error)
                for leftover in (
                    self.output_dir / ".staging",
                    self.output_dir / ".restore",
                    self.output_dir,
                ):
                    with contextlib.suppress(OSError):  # only empty ones: the user's files stay
                        leftover.rmdir()

    def _close_record(self, status: str, error: str | None) -> None:
        final = {
            "status": status,
            "ended": runs.utc_now(),
            "traceback": error,
            "last": dict(self.tracker.last),
            "unsent": self.tracker.unsent,
        }
        try:
            runs.update_record(self.store, self.run_id, lambda rec: apply_final(rec, final))
        except BenchKitError as e:
            path = save_pending_record(self.run_id, self.store.url, final)
            print_hint(
                f"[yellow]the final record of run {self.run_id} could not be written ({e}); "
                f"it is kept in {path}. Write it with:[/yellow]",
                f"benchkit sync {self.run_id}",
            )

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish(runs.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(runs.INTERRUPTED, "interrupted (KeyboardInterrupt)")
        else:
            self.finish(runs.FAILED, "".join(traceback.format_exception(exc_type, exc, tb)))

    # --- accelerate ------------------------------------------------------------------------

    @property
    def device(self) -> Any:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def backward(self, loss: Any, **kwargs: Any) -> None:
        self.accelerator.backward(loss, **kwargs)

    def prepare(self, *objects: Any) -> Any:
        """``accelerator.prepare`` for models, optimizers, schedulers and plain DataLoaders;
        BenchKit's streaming loaders (already split across ranks) are kept as they are and
        only get their batches moved to the device."""
        out: list[Any] = list(objects)
        to_accelerate = [
            i
            for i, o in enumerate(objects)
            if not isinstance(o, TrackedLoader) and not is_streaming_loader(o)
        ]
        if to_accelerate:
            prepared = self.accelerator.prepare(*(objects[i] for i in to_accelerate))
            if len(to_accelerate) == 1:
                prepared = (prepared,)
            for i, p in zip(to_accelerate, prepared, strict=True):
                out[i] = p
        from torch.utils.data import DataLoader

        for i, o in enumerate(out):
            if isinstance(o, TrackedLoader):
                continue
            if is_streaming_loader(o):
                out[i] = self._track(o, device=self._placement_device())
            elif isinstance(o, DataLoader) or type(o).__name__.startswith("DataLoader"):
                # accelerate places their batches and saves their state itself
                out[i] = self._track(o, device=None, streaming=False)
        return out[0] if len(out) == 1 else tuple(out)

    def _placement_device(self) -> Any:
        dev = self.accelerator.device
        return None if dev.type == "cpu" else dev

    def _track(
        self, loader: Any, device: Any, name: str | None = None, streaming: bool = True
    ) -> TrackedLoader:
        tracked = TrackedLoader(loader, device=device, name=name, streaming=streaming, run=self)
        self._loaders.append(tracked)
        return tracked

    def __getattr__(self, key: str) -> Any:
        # gather, reduce, unwrap_model, wait_for_everyone, ... come from the accelerator
        if key.startswith("_") or key in ("accelerator",):
            raise AttributeError(key)
        return getattr(self.accelerator, key)

    # --- data ------------------------------------------------------------------------------

    def loader(
        self,
        name: str | dict[str, float],
        *,
        shuffle: bool = False,
        num_workers: int = 0,
        batch_size: int | None = None,
        seed: int | None = None,
        transform: Any = None,
        chunk_class: type | None = None,
        chunk_args: Any = (),
        chunk_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TrackedLoader:
        """A streaming DataLoader over dataset ``name`` of the run's store, this rank's share.

        ``name`` may be a dict of dataset names and weights (``{"web": 0.7, "books": 0.3}``):
        the datasets are mixed at those proportions (see ``bench.mix``; ``epoch_samples=``
        sets the epoch's length).

        ``batch_size`` defaults to ``config["batch_size"]``; ``seed`` to ``config["seed"]``.
        A dataset declared in the training module streams with its transform and chunk class;
        ``transform``/``chunk_class`` (+ ``chunk_args``, ``chunk_kwargs``) set them here instead.
        Extra keyword arguments go to :class:`~benchkit.data.loader.StreamingDataLoader`.
        """
        import torch

        from benchkit.data.loader import StreamingDataLoader
        from benchkit.data.stream import open_dataset

        if batch_size is None:
            if "batch_size" not in self.config:
                raise TrainError(
                    f"run.loader({name!r}) needs a batch size: pass batch_size= or add "
                    "'batch_size' to the @bench.train config"
                )
            batch_size = int(self.config["batch_size"])

        def declared_for(name: str) -> dict[str, Any]:
            decl = self.datasets.get(name)
            declared: dict[str, Any] = {}
            if decl is not None:  # stream it the way its declaration says
                declared = {
                    "transform": decl.transform_fn,
                    "chunk_class": decl.chunk_class,
                    "chunk_args": decl.chunk_args,
                    "chunk_kwargs": decl.chunk_kwargs,
                }
            if transform is not None:
                declared["transform"] = transform
            if chunk_class is not None:
                declared.update(
                    chunk_class=chunk_class,
                    chunk_args=tuple(chunk_args),
                    chunk_kwargs=chunk_kwargs or {},
                )
            return declared

        where = {
            "shuffle": shuffle,
            "seed": self.config["seed"] if seed is None else seed,
            "rank": self.accelerator.process_index,
            "world_size": self.accelerator.num_processes,
        }
        if isinstance(name, dict):  # a mix: the data layer builds it from the same options
            from benchkit.data.mix import mix

            ds = mix(
                name,
                self.store,
                epoch_samples=kwargs.pop("epoch_samples", None),
                dataset_options={n: declared_for(n) for n in name},
                **where,
            )
        else:
            ds = open_dataset(name, store=self.store, **where, **declared_for(name))
        # a private generator, re-seeded every epoch: starting an iteration must not draw from
        # the global RNG, or a run resumed mid-epoch would diverge from an uninterrupted one
        generator = kwargs.pop("generator", None) or torch.Generator()
        dl = StreamingDataLoader(
            ds, batch_size=batch_size, num_workers=num_workers, generator=generator, **kwargs
        )
        tracked = self._track(dl, device=self._placement_device(), name=name)
        tracked.reseed = (generator, int(self.config["seed"] if seed is None else seed))
        return tracked

    # --- the loop --------------------------------------------------------------------------

    def epochs(self, total: int | None = None) -> Iterator[int]:
        """Epoch numbers from 0 to ``total`` (default ``config["epochs"]``); when resuming,
        from where the checkpoint left off. Sets each loader's epoch."""
        if total is None:
            if "epochs" not in self.config:
                raise TrainError(
                    "run.epochs() needs a count: pass it or add 'epochs' to the config"
                )
            total = int(self.config["epochs"])
        if self._resume_from is not None:
            info, self._resume_from = self._resume_from, None
            self.load_checkpoint(info.name)
        for epoch in range(self._start_epoch, total):
            self.epoch = epoch
            for loader in self._loaders:
                loader.set_epoch(epoch)
            self._apply_loader_states()
            yield epoch
            self._start_epoch = epoch + 1
            if epoch + 1 < total:
                self.stop_if_requested()
        self.epoch = None

    def _apply_loader_states(self) -> None:
        states, self._pending_loader_states = self._pending_loader_states, None
        if not states:
            return
        for i, loader in enumerate(self._loaders):
            state = states.get(str(i))
            if state is not None and loader.stateful:
                loader.load_state_dict(state)

    def progress(
        self, iterable: Iterable[Any], description: str | None = None, total: int | None = None
    ) -> Iterator[Any]:
        """Iterate with a progress bar (rate, ETA and the last logged values) on the main
        process; other processes iterate silently."""
        if not self.is_main_process:
            yield from self._boundaries(iterable)
            return
        from benchkit.training.progress import progress_bar

        if description is None and self.epoch is not None and "epochs" in self.config:
            description = f"epoch {self.epoch + 1}/{self.config['epochs']}"
        yield from progress_bar(self._boundaries(iterable), description or "", total, self)

    def _boundaries(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """``iterable`` with a stop check between items (tracked loaders check themselves)."""
        if isinstance(iterable, TrackedLoader):
            yield from iterable
            return
        first = True
        for item in iterable:
            if not first:
                self.stop_if_requested()
            first = False
            yield item

    # --- stopping ----------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop at the next step boundary, with a checkpoint.

        ``benchkit run`` calls this on SIGTERM (what schedulers and spot reclaim send). The
        boundaries are the batches of the run's loaders (``run.loader``, or a DataLoader
        passed to ``run.prepare``), the items of ``run.progress(...)`` and the end of each
        epoch of ``run.epochs()``; at the first one the run saves a checkpoint (mid-epoch when
        in an epoch: it resumes exactly there) and raises :class:`StopRun`, which ends it as
        ``interrupted``. Loops that use none of these can poll :attr:`should_stop`. With
        several processes the ranks agree every ``STOP_CHECK_EVERY`` boundaries (one small
        all-reduce), so they checkpoint together. Safe to call from a signal handler.
        """
        if self._stop_reason is None:
            self._stop_reason = reason

    @property
    def should_stop(self) -> bool:
        """True once a stop was requested in this process. A loop that uses none of the run's
        iterators may poll it (one process), or call :meth:`stop_if_requested` at a point
        every rank reaches (several processes)."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was requested in this process ("SIGTERM"), or None."""
        return self._stop_reason

    def stop_if_requested(self) -> None:
        """At a step boundary: checkpoint and raise :class:`StopRun` if a stop was requested
        (in any process). Every rank must call it at the same boundaries."""
        if not self._stop_due():
            return
        reason = self._stop_reason or "stop requested on another process"
        if self._last_checkpoint_step != self.step:
            name = self.save_checkpoint()
            if self.is_main_process:
                print_hint(
                    f"[yellow]{reason}: checkpoint {name} saved; stopping run "
                    f"{self.run_id}[/yellow]; continue it with:",
                    f"benchkit run --resume {runs.short_id(self.run_id)}",
                )
        raise StopRun(reason)

    def _stop_due(self) -> bool:
        if self.accelerator.num_processes == 1:
            return self._stop_reason is not None
        self._boundary_count += 1
        if self._boundary_count % STOP_CHECK_EVERY:
            return False
        import torch

        flag = torch.tensor([1.0 if self._stop_reason else 0.0], device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        """Log scalar values (numbers or one-element tensors) on the main process; ``step``
        defaults to a counter of ``log`` calls."""
        if step is None:
            step = self.step
        self.step = step + 1
        if self.accelerator.is_main_process:
            for tracker in self.accelerator.trackers:  # what accelerator.log does, minus its checks
                tracker.log(values, step=step)
            self._last_values = values
            self._values_version += 1
            if self.monitor is not None and self.monitor in values:
                self._monitor_value = values[self.monitor]

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print on the main process (through rich) and record the text as a run message."""
        if not self.is_main_process:
            return
        was_broken = console.broken
        # the reader of stdout may go away (``benchkit run ... | head``, a closed terminal): the
        # training goes on, and its messages are still recorded
        with console.surviving_broken_pipe():
            console.print(*objects, **kwargs)
        if console.broken and not was_broken:
            log.warning("stdout was closed: console output stops; messages are still recorded")
            self.tracker.message("stdout was closed; later messages are only recorded here")
        self.tracker.message(" ".join(str(o) for o in objects))

    # --- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, name: str | None = None) -> str:
        """Save model, optimizer, scheduler, RNG states, the epoch and the loaders' positions
        on every rank, and upload them once to ``checkpoints/<run-id>/<name>``. Keeps the last
        ``config["keep_checkpoints"]``. Every rank must call it. Returns the name."""
        in_epoch = self.epoch is not None and any(ld.in_progress for ld in self._loaders)
        if name is None:
            if self.epoch is None:
                name = f"step-{self.step:08d}"
            elif in_epoch:
                name = f"epoch-{self.epoch + 1:04d}-step-{self.step:08d}"
            else:
                name = f"epoch-{self.epoch + 1:04d}"
        state = {
            "epoch": -1 if self.epoch is None else self.epoch,
            "in_epoch": in_epoch,
            "step": self.step,
            "loaders": {
                str(i): ld.state_dict() for i, ld in enumerate(self._loaders) if ld.stateful
            },
        }
        # the run's name, config and seed travel with every checkpoint, so a damaged run
        # record can be rebuilt and a resume never falls back to default hyperparameters
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "in_epoch": in_epoch,
            "run_name": self.name,
            "config": dict(self.config),
            "seed": self.config.get("seed"),
        }
        best = None
        if self.monitor is not None and self._monitor_value is not None:
            value = self._monitor_value
            value = float(value.item() if hasattr(value, "item") else value)
            meta["monitor"] = {"metric": self.monitor, "mode": self.mode, "value": value}
            best = ckpt.Criterion(self.monitor, self.mode or "max", value)
        ckpt.save_checkpoint(
            self.accelerator,
            self.store,
            self.run_id,
            name,
            self.output_dir / ".staging",
            state=state,
            keep=int(self.config.get("keep_checkpoints", ckpt.DEFAULT_KEEP)),
            meta=meta,
            criterion=best,
        )
        self._last_checkpoint_step = self.step
        if self.is_main_process:
            self.tracker.message(f"checkpoint {name} saved")
            # what was logged up to a checkpoint is on disk (journal) before this returns, and
            # in the store too unless the store refuses it now (then it is retried and synced)
            self.tracker.flush()
        return name

    def load_checkpoint(self, name: str, run_id: str | None = None) -> dict[str, Any]:
        """Restore a checkpoint of this run (or of ``run_id``) on every rank: model,
        optimizer, scheduler, RNG states, step; ``epochs()`` continues after it and the loaders
        from their saved positions. Call after ``prepare``. Every rank must call it."""
        run_id = run_id or self.run_id
        what = f"checkpoint '{run_id}/{name}' in store {self.store.url}"
        dest = self.output_dir / ".restore" / name
        error: list[str | None] = [None]
        if self.accelerator.is_local_main_process:
            import shutil

            shutil.rmtree(dest, ignore_errors=True)  # left by an earlier load that was interrupted
            try:
                ckpt.fetch_checkpoint(self.store, run_id, name, dest)
            except CheckpointError as e:
                error[0] = str(e)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(error, from_process=0)
        if error[0] is not None:
            raise CheckpointError(error[0])
        state = ckpt.load_checkpoint_dir(self.accelerator, dest, what)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_local_main_process:
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
        self.step = int(state.get("step", 0))
        epoch = int(state.get("epoch", -1))
        if epoch >= 0:
            self._start_epoch = epoch if state.get("in_epoch") else epoch + 1
        if state.get("in_epoch"):
            self._pending_loader_states = dict(state.get("loaders") or {})
        if self.is_main_process:
            self.tracker.message(f"resumed from checkpoint {name}")
        log.info("run %s: loaded %s (epoch %s, step %s)", self.run_id, what, epoch, self.step)
        return state
