"""The original BenchKit training helpers, for scripts written in the classic style::

tracker = BenchAccelerateTracker("trial run", config["epochs"])
acc = get_accelerator(log_with=tracker)
acc.init_trackers("my_project", config=config)
...
acc.log({"loss": loss})
upload_model_checkpoint(acc, "epoch-3")
wipe_temp(acc)
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchkit.store import Store, open_store
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

log = logging.getLogger(__name__)


def get_accelerator(log_with: Any = None, **kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` (gloo on the CPU when several processes have no GPU);
    ``log_with`` takes a tracker, a tracker name or a list of them; other keyword arguments go
    to ``Accelerator``.

    As in the original, a module without trainable parameters (a loss such as
    ``nn.BCELoss()``) may be passed to ``prepare``: it is moved to the device instead of being
    wrapped in ``DistributedDataParallel``, which refuses such modules.
    """
    from accelerate import Accelerator

    from benchkit.training.run import needs_cpu_backend

    class BenchAccelerator(Accelerator):
        def prepare_model(
            self, model: Any, device_placement: bool | None = None, evaluation_mode: bool = False
        ) -> Any:
            if not any(p.requires_grad for p in model.parameters()):
                return model.to(self.device) if device_placement is not False else model
            return super().prepare_model(
                model, device_placement=device_placement, evaluation_mode=evaluation_mode
            )

    if log_with is not None and not isinstance(log_with, (list, tuple)):
        log_with = [log_with]
    if needs_cpu_backend():  # several processes, no GPU: gloo on the CPU
        kwargs["cpu"] = True
    return BenchAccelerator(log_with=log_with, **kwargs)


def _bench_tracker(accelerator: Any) -> Any:
    from benchkit.training.tracker import BenchTracker

    for tracker in list(getattr(accelerator, "trackers", [])) + list(
        getattr(accelerator, "log_with", None) or []
    ):
        if isinstance(tracker, BenchTracker):
            return tracker
    return None


def _temp_root(accelerator: Any) -> Path:
    """A scratch directory shared by the ranks of this job (same path on every rank)."""
    from accelerate.utils import broadcast_object_list

    path = [str(Path(tempfile.gettempdir()) / f"benchkit-{os.getpid()}")]
    if accelerator.num_processes > 1:
        broadcast_object_list(path, from_process=0)
    return Path(path[0])


def upload_model_checkpoint(
    accelerator: Any, name: str, store: str | Store | None = None, keep: int = 0
) -> str:
    """Save the accelerator state (model, optimizer, scheduler, RNG) and upload it as
    checkpoint ``name`` of the tracker's run (``checkpoints/<run-id>/<name>``). Every rank must
    call it. ``keep`` > 0 keeps only that many checkpoints of the run. Returns the run id."""
    from accelerate.utils import broadcast_object_list

    tracker = _bench_tracker(accelerator)
    if tracker is not None:
        store_obj = tracker.store if store is None else open_store(store)
        run_id = tracker.run_id
    else:
        store_obj = open_store(store)
        run_id = os.environ.get("BENCHKIT_RUN_ID") or runs.new_run_id("checkpoints")
    shared = [run_id]
    if accelerator.num_processes > 1:
        broadcast_object_list(shared, from_process=0)
    run_id = shared[0]
    if accelerator.is_main_process and not store_obj.exists(runs.run_key(run_id)):
        runs.save_record(
            store_obj,
            runs.RunRecord(id=run_id, name=tracker.run_name if tracker else "checkpoints"),
        )
    ckpt.save_checkpoint(accelerator, store_obj, run_id, name, _temp_root(accelerator), keep=keep,
                         meta={"epoch": None, "step": None})  # fmt: skip
    return run_id


def wipe_temp(accelerator: Any | None = None) -> None:
    """Remove BenchKit's temporary files of this job and release cached memory. As in the
    original, the processes meet before and after, so every rank must call it."""
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if accelerator is None or accelerator.is_local_main_process:
        root = Path(tempfile.gettempdir()) / f"benchkit-{os.getpid()}"
        shutil.rmtree(root, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
