"""Running a ``@bench.train`` function, in one process or several through torchrun: what
``benchkit run`` does once the command line has been parsed into a :class:`RunRequest`.

The launching process does everything that must happen once: check out a stored code version
(``--version``), migrate datasets missing from the store, type the ``--config`` values, pick the
run id (or the run to resume). With ``--processes N > 1`` it then starts
``python -m benchkit.training.torchrun --standalone --nproc_per_node N -m benchkit run ...``
(torchrun, quiet when stopped: :mod:`benchkit.training.torchrun`) and the
workers read the resolved run from ``BENCHKIT_RUN_SPEC`` (JSON in the environment) instead of
doing it again. On a machine without GPUs the workers use the CPU and gloo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchkit.code.package import EMBEDDED_MANIFEST, checkout, list_versions
from benchkit.console import err_console, print_hint
from benchkit.data.declare import datasets_in_module, datasets_in_project
from benchkit.data.migrate import ensure_migrated, stale_dataset
from benchkit.errors import BenchKitError, ConfigError, DataError, DatasetNotFound, TrainError
from benchkit.registry import TRAIN, declared, import_user_module
from benchkit.settings import get_paths, load_settings
from benchkit.store import Store, open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs
from benchkit.training.run import IMPLICIT_CONFIG, Run, StopRun

log = logging.getLogger(__name__)

SPEC_ENV = "BENCHKIT_RUN_SPEC"
MIXED_PRECISION = ("no", "fp16", "bf16")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


@dataclass
class RunSpec:
    """Everything a worker needs to join a run, resolved once by the launcher."""

    file: str
    fn: str | None
    name: str
    run_id: str
    config: dict[str, Any]
    store: str
    resume: bool = False
    cpu: bool = False
    mixed_precision: str | None = None
    project: str | None = None
    log_with: list[str] = field(default_factory=list)
    #: a classic script: call its main() (it builds its own accelerator and tracker)
    classic: bool = False
    #: the stored code version being run (``--version N``, or a checkout of one)
    code_version: int | None = None
    #: the project's git commit and whether the work tree had changes
    git: dict[str, Any] | None = None


# --- finding the function ----------------------------------------------------------------------


def find_train_function(module: ModuleType, fn: str | None = None) -> Any:
    """The module's ``@bench.train`` function (``fn`` picks one by name when there are several)."""
    found = declared(module, TRAIN)
    where = getattr(module, "__file__", module.__name__)
    if fn is not None:
        if fn in found:
            return found[fn]
        by_attr = getattr(module, fn, None)
        if by_attr is not None and getattr(by_attr, "__benchkit_kind__", None) == TRAIN:
            return by_attr
        raise TrainError(
            f"{where} has no @bench.train function named {fn!r}; "
            + (f"it has: {', '.join(found)}" if found else "it has none")
        )
    if not found:
        raise TrainError(
            f"no @bench.train function found in {where}; decorate your training function with "
            "@bench.train(config={...}) (import benchkit as bench)"
        )
    if len(found) > 1:
        raise TrainError(
            f"{where} has several @bench.train functions ({', '.join(found)}); pick one with --fn NAME"
        )
    return next(iter(found.values()))


# --- config ------------------------------------------------------------------------------------


def parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` converted to the type of ``default`` (JSON for lists, dicts and None)."""
    kind = type(default).__name__
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true/false, yes/no, on/off or 1/0")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, str):
            return text
        if isinstance(default, (list, tuple, dict)):
            value = json.loads(text)
            if not isinstance(value, (list, dict)) or isinstance(value, dict) != isinstance(
                default, dict
            ):
                raise ValueError(
                    f"expected a JSON {'object' if isinstance(default, dict) else 'array'}"
                )
            return value
        try:  # default None (or another type): JSON if it parses, else the string
            return json.loads(text)
        except ValueError:
            return text
    except ValueError as e:
        raise ConfigError(
            f"--config {key}={text}: not a valid {kind} (default {default!r}): {e}"
        ) from None


def apply_overrides(defaults: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """The config after ``key=value`` overrides, each typed by its default."""
    config = {**IMPLICIT_CONFIG, **defaults}
    types = {"keep_checkpoints": 0, "seed": 0}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--config takes key=value, got {pair!r}")
        if key not in config:
            raise ConfigError(
                f"unknown config key {key!r}; known keys: {', '.join(sorted(config))}"
            )
        default = config[key]
        if default is None and key in types:
            default = types[key]
        config[key] = parse_value(key, text, default)
    return config


# --- datasets ----------------------------------------------------------------------------------


def migrate_missing_datasets(
    module: ModuleType, store: Store, project_root: Path | None, strict: bool = False
) -> list[str]:
    """Migrate the datasets the module (and the project modules it imports) declares that
    the store does not have yet; returns their names. A stored dataset that no longer matches
    its declaration gets a warning, or with ``strict`` a :class:`DataError`. A declaration that
    cannot be evaluated here (its source files are on another machine: a remote job, ``run
    --version N`` elsewhere) is not checked: the stored dataset is what trains (``strict``
    refuses). All of this happens before the run is recorded."""
    migrated = []
    root = project_root or Path(module.__file__).parent
    for name, decl in datasets_in_project(module, root).items():
        if ensure_migrated(decl, store, root):
            err_console.print(f"[green]dataset {name!r} migrated[/green]")
            migrated.append(name)
            continue
        try:
            stale = stale_dataset(decl, store)
        except DataError as e:
            if strict:
                raise DataError(f"{e} (--strict: the stored dataset cannot be checked here)") from e
            err_console.print(f"[dim]dataset {name!r} not checked against its declaration here "
                              f"({e}); training on the stored one[/dim]", highlight=False,
                              soft_wrap=True)  # fmt: skip
            continue
        if stale and strict:
            raise DataError(f"{stale} (--strict: not training on a stale dataset)")
        if stale:
            err_console.print(f"[yellow]warning:[/yellow] {stale}", highlight=False, soft_wrap=True)
    return migrated


# --- resolving the run -------------------------------------------------------------------------


@dataclass
class RunRequest:
    """What ``benchkit run`` was asked for, before anything is resolved."""

    #: the training module; None with ``version``
    file: str | None = None
    #: which ``@bench.train`` function, when the module has several
    fn: str | None = None
    #: the run's name (default: the function's)
    name: str | None = None
    #: ``KEY=VALUE`` overrides, typed by the defaults
    config: list[str] = field(default_factory=list)
    #: None: a new run; "": the latest run of this name with a checkpoint; else a run reference
    resume: str | None = None
    #: run stored code version N instead of ``file``
    version: int | None = None
    store: str | None = None
    cpu: bool = False
    mixed_precision: str | None = None
    log_with: list[str] = field(default_factory=list)
    processes: int = 1
    #: the new run's id (default: a fresh one from the time and the name)
    run_id: str | None = None
    #: stop (instead of warning) when a declared dataset no longer matches the stored one
    strict: bool = False


def resolve_resume(store: Store, name: str, ref: str | None) -> runs.RunRecord:
    """The run to resume: ``ref`` (id, short id, prefix or row), or the latest run called
    ``name`` that has a checkpoint. A damaged record is rebuilt first; a run whose config
    cannot be recovered is refused (it would resume with other hyperparameters)."""
    if ref:
        rec = _resumable(store, runs.resolve_run(store, ref))
        if ckpt.latest_checkpoint(store, rec.id) is None:
            raise TrainError(
                f"run {rec.id} has no checkpoint in store {store.url}; nothing to resume from"
            )
        return rec
    for rec in reversed(runs.list_records(store)):
        if rec.name == name and ckpt.latest_checkpoint(store, rec.id) is not None:
            return _resumable(store, rec.id)
    raise TrainError(
        f"no run named {name!r} with a checkpoint in store {store.url}; start one without --resume "
        "(or give --resume RUN_ID)"
    )


def _resumable(store: Store, run_id: str) -> runs.RunRecord:
    try:
        rec = runs.load_record(store, run_id)
    except runs.RecordDamaged as e:
        log.warning("%s", e)
        rec = runs.rebuild_record(store, run_id)
    if rec.rebuilt and not rec.rebuilt.get("config"):
        raise TrainError(
            f"run {run_id}: its record was rebuilt but no checkpoint holds its config (they were "
            "saved by an older BenchKit), so resuming would use other hyperparameters. Start a "
            "new run, or load a checkpoint explicitly with run.load_checkpoint(name, run_id=...)"
        )
    return rec


def processes_from(value: str | int | None) -> int:
    """The process count from ``--processes``: a number, or ``auto`` (one per GPU)."""
    if value in (None, "", 1, "1"):
        return 1
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--processes takes a number or 'auto', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"--processes must be at least 1, got {n}")
    return n


def prepare_run(req: RunRequest) -> tuple[RunSpec, ModuleType]:
    """Resolve the file (or code version), the train function, the store, the datasets and
    the config: everything that must happen once, before any training process starts."""
    file, store_url, version = req.file, req.store, req.version
    if not file and version is None and req.resume:  # `run --resume ID`: the run's own module
        file, version = module_of_run(req.resume, store_url)
    if version is not None:
        file, store_url = checkout_version(version, store_url)
    if not file:
        raise ConfigError("give the training module: benchkit run train.py (or --version N)")
    settings = load_settings({"store": store_url}, project_dir=Path(file).resolve().parent)
    store = open_store(settings.store)
    module = import_user_module(file)
    classic = req.fn is None and not declared(module, TRAIN) and is_classic_script(module)
    if classic:
        if req.config or req.resume is not None:
            raise ConfigError(
                f"{file} is a classic script (a main() and no @bench.train function): "
                "--config and --resume need a @bench.train function"
            )
        fn = None
        name = req.name or Path(file).stem
    else:
        fn = find_train_function(module, req.fn)
        name = req.name or fn.__benchkit_name__
    migrate_missing_datasets(module, store, settings.project_root, strict=req.strict)
    resume = req.resume is not None
    if resume and req.run_id:
        raise ConfigError("--run-id starts a new run; to continue one, give --resume RUN_ID")
    if classic:
        config, run_id = {}, given_run_id(store, name, req.run_id)
    elif resume:
        rec = resolve_resume(store, name, req.resume or None)
        base = dict(rec.config)
        for k, v in getattr(fn, "config", {}).items():
            base.setdefault(k, v)
        config = apply_overrides(base, req.config)
        run_id = rec.id
        name = rec.name
    else:
        config = apply_overrides(getattr(fn, "config", {}), req.config)
        run_id = given_run_id(store, name, req.run_id)
    spec = RunSpec(
        file=str(Path(file).resolve()),
        fn=req.fn,
        name=name,
        run_id=run_id,
        config=config,
        store=store.url if "://" not in settings.store else settings.store,
        resume=resume,
        cpu=req.cpu,
        mixed_precision=req.mixed_precision,
        project=settings.project,
        log_with=list(req.log_with),
        classic=classic,
        code_version=version if version is not None else packaged_version(store, file),
        git=git_state(Path(file).resolve().parent),
    )
    return spec, module


def module_of_run(ref: str, store_url: str | None) -> tuple[str | None, int | None]:
    """The training module of run ``ref`` (a path, None) when it is still on this machine,
    else its stored code version (None, N); a ConfigError naming what to give otherwise."""
    store = open_store(load_settings({"store": store_url}).store)
    rec = runs.load_record(store, runs.resolve_run(store, ref))
    if rec.module and Path(rec.module).is_file():
        return rec.module, None
    if rec.code_version is not None:
        return None, rec.code_version
    where = f" (it ran {rec.module}, which is not on this machine)" if rec.module else ""
    raise ConfigError(
        f"give the training module of run {rec.id}{where}: benchkit run path/to/train.py "
        f"--resume {runs.short_id(rec.id)}"
    )


def given_run_id(store: Store, name: str, given: str | None) -> str:
    """``given`` when it can name a new run (``--run-id``), else a fresh id."""
    if not given:
        return runs.new_run_id(name)
    if runs.slug(given) != given:
        raise ConfigError(f"--run-id {given!r}: use letters, digits, '-', '_' and '.' only")
    # ranks started by an outer torchrun (multi-node) each resolve the same id: rank 0 may
    # already have written the record
    if "RANK" not in os.environ and store.exists(runs.run_key(given)):
        raise ConfigError(
            f"run {given} already exists in store {store.url}; continue it with --resume {given}"
        )
    return given


def packaged_version(store: Store, file: str) -> int | None:
    """The stored code version ``file`` was checked out from (``versions pull``), found by the
    embedded manifest next to it; None for code that is not a pulled version."""
    embedded = Path(file).resolve().parent / EMBEDDED_MANIFEST
    if not embedded.is_file():
        return None
    digest = hashlib.sha256(embedded.read_bytes()).hexdigest()
    try:
        versions = list_versions(store)
    except BenchKitError as e:
        log.warning("could not list code versions in %s: %s", store.url, e)
        return None
    return next((m.version for m in versions if m.content_sha256 == digest), None)


def git_state(directory: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git work tree holding ``directory``, or None (no git, or
    not a work tree)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def is_classic_script(module: ModuleType) -> bool:
    """A script in the original style: a ``main()`` that builds its own accelerator."""
    return callable(getattr(module, "main", None))


def checkout_version(version: int, store_url: str | None = None) -> tuple[str, str]:
    """Check out stored code version ``version`` into a fresh directory. Returns its entry
    file and the store it came from (the run uses that store: the checked-out benchkit.toml
    may name a store relative to the project, which would resolve inside the checkout)."""
    settings = load_settings({"store": store_url})
    store = open_store(settings.store)
    base = get_paths().cache / "code"
    base.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=base))
    manifest = checkout(store, version, dest)
    err_console.print(f"[cyan]code version {version} checked out into {dest}[/cyan]")
    return str(dest / manifest.entry_point), settings.store


# --- running -----------------------------------------------------------------------------------


def run(req: RunRequest) -> int:
    """``benchkit run``: resolve the request, then train in this process or through torchrun;
    returns the exit status."""
    spec, module = prepare_run(req)
    if req.processes > 1:
        return launch_torchrun(spec, req.processes)
    return run_in_process(spec, module)


def run_worker(spec_json: str) -> int:
    """A torchrun worker: join the run the launcher resolved (``BENCHKIT_RUN_SPEC``)."""
    spec = RunSpec(**json.loads(spec_json))
    return run_in_process(spec, import_user_module(spec.file))


def run_in_process(spec: RunSpec, module: ModuleType) -> int:
    """Build the ``Run`` in this process, call the train function, record the outcome."""
    if spec.classic:
        return run_classic(spec, module)
    fn = find_train_function(module, spec.fn)
    run = Run(
        spec.config,
        name=spec.name,
        store=spec.store,
        run_id=spec.run_id,
        resume=spec.resume,
        cpu=spec.cpu,
        mixed_precision=spec.mixed_precision,
        log_with=spec.log_with or None,
        datasets=datasets_in_module(module),
        project=spec.project,
        code_version=spec.code_version,
        git=spec.git,
        monitor=getattr(fn, "monitor", None),
        mode=getattr(fn, "mode", None),
        module=spec.file,
    )
    if run.is_main_process:
        verb = "resuming" if spec.resume else "run"
        err_console.print(
            f"[bold]{verb} {run.run_id}[/bold] ({run.accelerator.num_processes} process(es), "
            f"{run.device}, store {run.store.url})",
            highlight=False,
        )
    try:
        with stop_on_sigterm(run.request_stop):
            fn(run)
    except KeyboardInterrupt as e:
        why = f"interrupted ({e})" if isinstance(e, StopRun) else "interrupted (KeyboardInterrupt)"
        run.finish(runs.INTERRUPTED, why)
        if run.is_main_process:
            say_interrupted(run.store, run.run_id, why)
        return exit_status(e)
    except BaseException as e:
        tb = traceback.format_exc()
        if run.stop_reason and run.accelerator.num_processes > 1 and isinstance(e, Exception):
            # this rank was asked to stop, and a peer that stopped first left the collective
            # it was in: the run was stopped, not broken (the nodes of a multi-node job get
            # their signal at different moments)
            why = f"interrupted ({run.stop_reason}; {type(e).__name__} as the other processes stopped)"
            run.finish(runs.INTERRUPTED, why)
            if run.is_main_process:
                say_interrupted(run.store, run.run_id, why)
            return exit_status(StopRun(run.stop_reason))
        try:
            run.finish(runs.FAILED, tb)
        except Exception:
            log.exception("recording the failure of run %s failed", run.run_id)
        if isinstance(e, BenchKitError):
            raise
        if isinstance(e, SystemExit) and e.code in (0, None):
            return 0
        err_console.print(tb, highlight=False, markup=False)
        err_console.print(f"[bold red]run {run.run_id} failed:[/bold red] {type(e).__name__}: {e}")
        return 1
    run.finish(runs.FINISHED)
    if run.is_main_process:
        print_hint(
            f"[green]run {run.run_id} finished[/green]; see it with:",
            f"benchkit runs show {runs.short_id(run.run_id)}",
        )
    return 0


def say_interrupted(store: Store, run_id: str, why: str) -> None:
    """Tell the user the run stopped and, when it has a checkpoint, how to continue it."""
    message = f"[yellow]run {run_id} {why}[/yellow]"
    try:
        resumable = ckpt.latest_checkpoint(store, run_id) is not None
    except BenchKitError:  # the store is down: saying so is the final record's business
        resumable = False
    if not resumable:
        err_console.print(message, highlight=False)
        return
    print_hint(f"{message}; continue it with:", f"benchkit run --resume {runs.short_id(run_id)}")


#: Seconds between a SIGTERM and giving up on a step boundary (then: stop without checkpoint).
STOP_GRACE = 60.0
#: A SIGTERM this soon after the first is the same request delivered twice.
DUPLICATE_WINDOW = 2.0


def exit_status(e: BaseException) -> int:
    """130 for Ctrl-C, 143 (128 + SIGTERM) for a run stopped by SIGTERM."""
    return 128 + signal.SIGTERM if isinstance(e, StopRun) and "SIGTERM" in str(e) else 130


@contextlib.contextmanager
def stop_on_sigterm(request_stop: Callable[[str], None]) -> Iterator[None]:
    """While inside: the first SIGTERM asks for a stop at the next step boundary (checkpoint
    first, see ``Run.request_stop``); a second one, or ``BENCHKIT_STOP_GRACE`` seconds (60)
    without a boundary, stops at once. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    grace = float(os.environ.get("BENCHKIT_STOP_GRACE") or STOP_GRACE)
    timers: list[threading.Timer] = []

    first: list[float] = []
    expired = threading.Event()
    main_ident = threading.main_thread().ident
    assert main_ident is not None

    closing = threading.Lock()
    closed: list[bool] = []

    def give_up() -> None:
        # a real signal, not _thread.interrupt_main(): it also breaks a blocking call (a long
        # sleep, a read), which returns EINTR and lets the handler below raise
        with closing:
            if not closed:
                expired.set()
                signal.pthread_kill(main_ident, signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if expired.is_set():
            raise StopRun(f"SIGTERM, and no step boundary within {grace:g} s")
        if first:
            # torchrun forwards the SIGTERM its process group also got: not a second request
            if time.monotonic() - first[0] > DUPLICATE_WINDOW:
                raise StopRun("SIGTERM, twice")
            return
        first.append(time.monotonic())
        request_stop("SIGTERM")
        timers.append(threading.Timer(grace, give_up))
        timers[0].daemon = True
        timers[0].start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        with closing:
            closed.append(True)
        for t in timers:
            t.cancel()
        signal.signal(signal.SIGTERM, previous)


def run_classic(spec: RunSpec, module: ModuleType) -> int:
    """Call a classic script's ``main()``. Its ``BenchAccelerateTracker`` joins run
    ``spec.run_id`` (through ``BENCHKIT_RUN_ID``); the store, ``--cpu`` and
    ``--mixed-precision`` reach its accelerator through the environment."""
    env = {"BENCHKIT_RUN_ID": spec.run_id, "BENCHKIT_STORE": spec.store}
    if spec.cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    if spec.mixed_precision:
        env["ACCELERATE_MIXED_PRECISION"] = spec.mixed_precision
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    argv, sys.argv = sys.argv, [spec.file]
    try:
        with stop_on_sigterm(_stop_now):  # a classic script has no step boundaries to use
            module.main()
    except KeyboardInterrupt as e:
        why = f"interrupted ({e})" if isinstance(e, StopRun) else "interrupted (KeyboardInterrupt)"
        _mark_if_running(spec, runs.INTERRUPTED, why, create=True)
        return exit_status(e)
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            return 0
        tb = traceback.format_exc()
        # a dataset that is merely not migrated yet does not make a (failed) run
        _mark_if_running(spec, runs.FAILED, tb, create=not isinstance(e, DatasetNotFound))
        if isinstance(e, BenchKitError):
            raise
        err_console.print(tb, highlight=False, markup=False)
        return 1
    finally:
        sys.argv = argv
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return 0


def _stop_now(reason: str) -> None:
    raise StopRun(reason)


def torchrun_command(n: int) -> list[str]:
    """The command that starts ``n`` workers of ``benchkit run`` on this machine."""
    return [
        sys.executable, "-m", "benchkit.training.torchrun", "--standalone", f"--nproc_per_node={n}",
        "-m", "benchkit", "run",
    ]  # fmt: skip


def launch_torchrun(spec: RunSpec, n: int) -> int:
    """Run ``n`` worker processes through torchrun; record failures the workers could not."""
    env = dict(os.environ)
    env[SPEC_ENV] = json.dumps(asdict(spec))
    env["BENCHKIT_RUN_ID"] = spec.run_id
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = torchrun_command(n)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    terminated: list[bool] = []

    def forward(signum: int, frame: Any) -> None:
        # torchrun passes it on to the workers, which checkpoint and stop (Run.request_stop)
        terminated.append(True)
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _mark_if_running(spec, runs.INTERRUPTED, "interrupted (KeyboardInterrupt)")
        say_interrupted(open_store(spec.store), spec.run_id, "interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        _mark_if_running(spec, runs.INTERRUPTED, "interrupted (SIGTERM)")
        say_interrupted(open_store(spec.store), spec.run_id, "interrupted (SIGTERM)")
        return 128 + signal.SIGTERM
    if code != 0:
        status = _mark_if_running(spec, runs.FAILED, f"torchrun exited with status {code}")
        if status == runs.INTERRUPTED:  # the workers got the Ctrl-C and recorded it
            return 130
        return code if code > 0 else 1
    return 0


def _mark_if_running(spec: RunSpec, status: str, why: str, create: bool = False) -> str | None:
    """A worker killed hard cannot record its end: do it for it. Returns the final status
    (None when the store could not be reached: the run then shows as lost once its
    heartbeat is old)."""

    def mark(rec: runs.RunRecord) -> None:
        if rec.status == runs.RUNNING:
            rec.status = status
            rec.ended = runs.utc_now()
            rec.traceback = rec.traceback or why

    def new() -> runs.RunRecord:
        return runs.RunRecord(id=spec.run_id, name=spec.name)

    try:
        rec = runs.update_record(
            open_store(spec.store), spec.run_id, mark, create=new if create else None
        )
    except BenchKitError as e:
        log.warning("could not record the end of run %s: %s", spec.run_id, e)
        return None
    return rec.status
