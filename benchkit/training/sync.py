"""``benchkit sync``: send what runs on this machine journaled but could not write.

For every writer journal of the chosen runs (``<data dir>/journal/<run-id>/<writer>/``) it sends
the records beyond the acknowledged cursor to the journal's store (or ``store``), then writes
the final run record a finished run could not write (``record.json`` next to the journals),
and clears the run record's ``unsent`` note once nothing is left. A fully sent journal is
deleted. Safe to run twice and while the run is still going (the live sender and ``sync`` take
the journal's lock per batch; readers de-duplicate records by writer and seq), and on crashed
runs (a journal's torn tail is ignored: it was never acknowledged).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.errors import BenchKitError, TrainError
from benchkit.store import Store, open_store
from benchkit.training import runs
from benchkit.training.journal import (
    apply_final,
    find_journals,
    journal_root,
    pending_record_path,
)
from benchkit.training.sender import send_pending
from benchkit.training.sinks import sink_for

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    """What ``sync`` did for one run."""

    run_id: str
    store: str
    sent: int = 0
    left: int = 0
    record_written: bool = False
    errors: list[str] = field(default_factory=list)


def journaled_runs(root: Path | None = None) -> list[str]:
    """Ids of the runs that have something journaled on this machine."""
    base = root or journal_root()
    return sorted(p.name for p in base.glob("*") if p.is_dir() and any(p.iterdir()))


def match_run(ref: str, root: Path | None = None) -> str:
    """The journaled run named by ``ref``: its id, short id or a unique prefix of either."""
    ids = journaled_runs(root)
    if ref in ids:
        return ref
    found = runs.id_matches(ids, ref)
    if len(found) == 1:
        return found[0]
    if found:
        raise TrainError(f"'{ref}' matches several journaled runs: {', '.join(found)}")
    raise TrainError(
        f"nothing journaled for run '{ref}' on this machine (under {root or journal_root()}); "
        "`benchkit sync` with no run lists what is"
    )


def sent_already(ref: str, store: str | Store | None = None) -> str | None:
    """The id of the run ``ref`` names when nothing of it is journaled here but its store
    knows it (a second ``sync`` of a run), else None."""
    try:
        return runs.resolve_run(open_store(store), ref)
    except BenchKitError:
        return None


def sync_run(
    run_id: str, store: str | Store | None = None, timeout: float = 60.0, root: Path | None = None
) -> SyncResult:
    """Send one run's journal remainders and its pending final record (see the module)."""
    journals = find_journals(run_id, root)
    pending_path = pending_record_path(run_id, root)
    pending = json.loads(pending_path.read_text()) if pending_path.is_file() else None
    url = store or (journals[0].store_url if journals else (pending or {}).get("store"))
    target = open_store(url)
    result = SyncResult(run_id, target.url)
    sink = sink_for(target)
    for journal in journals:
        try:
            sent, left = send_pending(journal, sink, timeout)
        except (BenchKitError, OSError) as e:
            result.errors.append(f"journal {journal.dir}: {e}")
            result.left += journal.unsent()
            continue
        result.sent += sent
        result.left += left
        if left == 0:
            journal.remove()
        else:
            result.errors.append(f"{left} record(s) of {journal.dir} still refused by {target.url}")
    try:
        _update_record(target, run_id, pending, result)
    except BenchKitError as e:
        result.errors.append(f"run record: {e}")
        return result
    if pending is not None:
        pending_path.unlink(missing_ok=True)
        result.record_written = True
    _remove_empty(pending_path.parent)
    return result


def _update_record(store: Store, run_id: str, pending: dict | None, result: SyncResult) -> None:
    if pending is None and result.left:
        return  # nothing to write yet: the record's `unsent` note still holds

    def change(rec: runs.RunRecord) -> None:
        if pending is not None:
            apply_final(rec, pending["final"])
        if result.left == 0:
            rec.unsent = None
        elif rec.unsent is not None:
            rec.unsent = {**rec.unsent, "records": result.left}

    if not store.exists(runs.run_key(run_id)) and pending is None:
        return  # records of a run without a record (a script's tracker): the metrics suffice
    runs.update_record(store, run_id, change, create=lambda: runs.RunRecord(id=run_id, name=run_id))


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
