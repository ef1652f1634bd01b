"""What a project holds, as rows: datasets, code versions, runs and checkpoints.

The rows index the blobs (the store stays the source of truth). They change in the same
request that writes or deletes a blob:

=======================================  ==================================================
key written or deleted                   row
=======================================  ==================================================
``datasets/<name>/...``                  the dataset (from ``index.json``; without a
                                         readable one it is listed as incomplete)
``code/<n>/manifest.json`` (+ the rest)  the code version (its manifest)
``runs/<id>/run.json``                   the run (its record)
``checkpoints/<run>/<name>``             the checkpoint (its size)
=======================================  ==================================================

A change is first marked pending (one row per item), then the store is changed, then the
item is re-read from the store and the mark cleared, all before the request answers; a
server killed in between re-reads its pending items at the next start
(:meth:`Catalog.resume_pending`), and ``benchkit server reindex`` rebuilds everything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from benchkit.data.index import INDEX_FILE, DatasetIndex
from benchkit.errors import BenchKitError, ObjectNotFound
from benchkit.server.db.models import (
    Checkpoint,
    CodeVersion,
    Dataset,
    PendingIndex,
    Project,
    Run,
    utcnow,
)
from benchkit.server.db.session import Database
from benchkit.server.services.errors import NotFound
from benchkit.store import Store

log = logging.getLogger(__name__)

#: JSON documents larger than this are not parsed into the catalog (listed as unreadable)
MAX_DOCUMENT = 64 * 1024 * 1024


def project_prefix(project_id: str) -> str:
    """Where a project's objects live in the server's store."""
    return f"projects/{project_id}/"


@dataclass(frozen=True)
class Item:
    """One catalog entry a key belongs to."""

    kind: str  # "dataset" | "version" | "run" | "checkpoint"
    name: str
    run: str = ""

    @property
    def marker(self) -> str:
        """A key-like name for the pending table."""
        if self.kind == "dataset":
            return f"datasets/{self.name}/"
        if self.kind == "version":
            return f"code/{self.name}/"
        if self.kind == "run":
            return f"runs/{self.name}/run.json"
        return f"checkpoints/{self.run}/{self.name}"


def item_of(key: str) -> Item | None:
    """The catalog item ``key`` (a project-relative key) belongs to, or None."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "datasets":
        return Item("dataset", parts[1])
    if len(parts) >= 3 and parts[0] == "code" and parts[1].isdigit():
        return Item("version", parts[1])
    if len(parts) == 3 and parts[0] == "runs" and parts[2] == "run.json":
        return Item("run", parts[1])
    if len(parts) == 3 and parts[0] == "checkpoints":
        return Item("checkpoint", parts[2], run=parts[1])
    return None


def item_from_marker(marker: str) -> Item | None:
    return item_of(marker + "x" if marker.endswith("/") else marker)


class Catalog:
    """Keeps the catalog rows of every project in step with the store, and answers queries."""

    def __init__(self, db: Database, store: Store) -> None:
        self.db = db
        self.store = store

    # --- keeping in step -----------------------------------------------------------------------

    def mark(self, project_id: str, keys: Iterable[str]) -> list[Item]:
        """Record the items ``keys`` belong to as pending; returns them."""
        items = sorted({i for i in map(item_of, keys) if i is not None}, key=lambda i: i.marker)
        if items:
            with self.db.write() as s:
                for item in items:
                    row = {"project_id": project_id, "key": item.marker}
                    self.db.upsert(s, PendingIndex, row, update=False)
        return items

    def settle(self, project_id: str, items: Iterable[Item], written: str | None = None) -> None:
        """Re-read ``items`` from the store and clear their pending marks. ``written`` is the
        key just written (lets a dataset chunk skip the work)."""
        for item in items:
            try:
                self.refresh(project_id, item, written)
            except Exception:  # the store is the truth: a failed refresh stays pending
                log.exception("could not index %s of project %s", item.marker, project_id)
                continue
            with self.db.write() as s:
                s.execute(
                    delete(PendingIndex).where(
                        PendingIndex.project_id == project_id, PendingIndex.key == item.marker
                    )
                )

    def resume_pending(self) -> int:
        """Re-index what a killed server left pending; returns how many items."""
        with self.db.read() as s:
            rows = [(p.project_id, p.key) for p in s.scalars(select(PendingIndex))]
        for project_id, marker in rows:
            item = item_from_marker(marker)
            if item is not None:
                self.settle(project_id, [item])
        if rows:
            log.info("re-indexed %d catalog items left pending by the previous run", len(rows))
        return len(rows)

    def reindex(self, project_id: str) -> int:
        """Rebuild a project's catalog from its blobs; returns the number of items."""
        prefix = project_prefix(project_id)
        items = {i for i in (item_of(k[len(prefix) :]) for k in self.store.list(prefix)) if i}
        with self.db.write() as s:
            for model in (Dataset, CodeVersion, Run, Checkpoint):
                s.execute(delete(model).where(model.project_id == project_id))
        for item in sorted(items, key=lambda i: i.marker):
            self.refresh(project_id, item)
        return len(items)

    def refresh(self, project_id: str, item: Item, written: str | None = None) -> None:
        """Make the item's row match the store."""
        getattr(self, f"_refresh_{item.kind}")(project_id, item, written)

    def _key(self, project_id: str, rel: str) -> str:
        return project_prefix(project_id) + rel

    def _document(self, key: str) -> Any:
        """A JSON document from the store, None if absent; ValueError if unreadable."""
        try:
            size = self.store.stat(key).size
        except ObjectNotFound:
            return None
        if size > MAX_DOCUMENT:
            raise ValueError(f"{key} is {size} bytes, over the catalog's limit")
        return json.loads(self.store.get(key))

    def _refresh_dataset(self, project_id: str, item: Item, written: str | None) -> None:
        prefix = f"datasets/{item.name}/"
        index_key = prefix + INDEX_FILE
        with self.db.read() as s:
            known = s.get(Dataset, (project_id, item.name)) is not None
        if written is not None and written != index_key and known:
            return  # one more chunk of a dataset already listed
        row: dict[str, Any] | None
        try:
            doc = self._document(self._key(project_id, index_key))
            idx = None if doc is None else DatasetIndex.from_dict(doc, index_key)
        except (ValueError, BenchKitError) as e:
            log.info("project %s: %s is unreadable (%s)", project_id, index_key, e)
            idx = None
            doc = {}
        if idx is not None:
            row = {
                "complete": True,
                "samples": idx.num_samples,
                "chunks": len(idx.chunks),
                "bytes": idx.total_bytes,
                "created": idx.created,
            }
        elif doc is not None or self.store.list(self._key(project_id, prefix)):
            row = {
                "complete": False,
                "samples": None,
                "chunks": None,
                "bytes": None,
                "created": None,
            }
        else:
            row = None
        # a chunk only adds a missing row: it must not undo a concurrent index.json's
        chunk = written is not None and written != index_key and row is not None
        self._put(Dataset, (project_id, item.name), row, update=not chunk, name=item.name)

    def _refresh_version(self, project_id: str, item: Item, written: str | None) -> None:
        key = f"code/{item.name}/manifest.json"
        if written is not None and written != key:
            return  # the archive: the version appears with its manifest, written last
        try:
            doc = self._document(self._key(project_id, key))
        except ValueError as e:
            log.info("project %s: %s is unreadable (%s)", project_id, key, e)
            doc = None
        row = {"manifest": doc} if isinstance(doc, dict) else None
        self._put(CodeVersion, (project_id, int(item.name)), row, version=int(item.name))

    def _refresh_run(self, project_id: str, item: Item, written: str | None) -> None:
        key = f"runs/{item.name}/run.json"
        try:
            doc = self._document(self._key(project_id, key))
        except ValueError as e:
            log.info("project %s: %s is unreadable (%s)", project_id, key, e)
            doc = None
        row = None
        if isinstance(doc, dict):
            row = {
                "record": doc,
                "name": str(doc.get("name", ""))[:255],
                "status": str(doc.get("status", ""))[:32],
            }
        self._put(Run, (project_id, item.name), row, id=item.name)

    def _refresh_checkpoint(self, project_id: str, item: Item, written: str | None) -> None:
        key = self._key(project_id, f"checkpoints/{item.run}/{item.name}")
        try:
            row: dict[str, Any] | None = {"size": self.store.stat(key).size}
        except ObjectNotFound:
            row = None
        self._put(
            Checkpoint, (project_id, item.run, item.name), row, run_id=item.run, name=item.name
        )

    def _put(
        self,
        model: Any,
        pk: tuple,
        values: dict[str, Any] | None,
        update: bool = True,
        **ident: Any,
    ) -> None:
        """Upsert or (``values`` None) delete one row (concurrent refreshes of one item, e.g.
        the chunks of a dataset uploaded in parallel, may race: the upsert lets them)."""
        ident = {"project_id": pk[0], **ident}
        with self.db.write() as s:
            if s.get(Project, pk[0]) is None:
                return  # the project was deleted meanwhile
            if values is None:
                s.execute(delete(model).where(*(getattr(model, k) == v for k, v in ident.items())))
                return
            self.db.upsert(s, model, {**ident, **values, "updated_at": utcnow()}, update=update)

    # --- queries -------------------------------------------------------------------------------

    def datasets(self, project_id: str) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Dataset).where(Dataset.project_id == project_id).order_by(Dataset.name)
            )
            return [_dataset(d) for d in rows]

    def dataset(self, project_id: str, name: str) -> dict[str, Any]:
        with self.db.read() as s:
            row = s.get(Dataset, (project_id, name))
            if row is None:
                raise NotFound(f"no dataset {name!r} in this project")
            return _dataset(row)

    def versions(self, project_id: str) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(CodeVersion)
                .where(CodeVersion.project_id == project_id)
                .order_by(CodeVersion.version)
            )
            return [v.manifest for v in rows]

    def version(self, project_id: str, version: int) -> dict[str, Any]:
        with self.db.read() as s:
            row = s.get(CodeVersion, (project_id, version))
            if row is None:
                raise NotFound(f"no code version {version} in this project")
            return row.manifest

    def runs(self, project_id: str) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(select(Run).where(Run.project_id == project_id).order_by(Run.id))
            return [r.record for r in rows]

    def run(self, project_id: str, run_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            row = s.get(Run, (project_id, run_id))
            if row is None:
                raise NotFound(f"no run {run_id!r} in this project")
            return row.record

    def checkpoints(self, project_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Checkpoints by run (oldest run first), each run's in the order it saved them, with
        the epoch, step and time its record gives (as ``checkpoints list`` shows them)."""
        with self.db.read() as s:
            q = select(Checkpoint).where(Checkpoint.project_id == project_id)
            if run_id is not None:
                q = q.where(Checkpoint.run_id == run_id)
            by_run: dict[str, list[Checkpoint]] = {}
            for c in s.scalars(q):
                by_run.setdefault(c.run_id, []).append(c)
            records = {
                r.id: r.record
                for r in s.scalars(
                    select(Run).where(Run.project_id == project_id, Run.id.in_(list(by_run)))
                )
            }
        out: list[dict[str, Any]] = []
        for rid in sorted(by_run):
            saved = records.get(rid, {}).get("checkpoints") or []
            order = {c.get("name"): i for i, c in enumerate(saved) if isinstance(c, dict)}
            meta = {c.get("name"): c for c in saved if isinstance(c, dict)}
            for c in sorted(by_run[rid], key=lambda c: (order.get(c.name, -1), c.name)):
                m = meta.get(c.name, {})
                size = m.get("size")
                out.append(
                    {
                        "run_id": rid,
                        "name": c.name,
                        "size": c.size if size is None else size,
                        "epoch": m.get("epoch"),
                        "step": m.get("step"),
                        "time": m.get("time"),
                    }
                )
        return out


def _dataset(d: Dataset) -> dict[str, Any]:
    return {
        "name": d.name,
        "complete": d.complete,
        "samples": d.samples,
        "chunks": d.chunks,
        "bytes": d.bytes,
        "created": d.created,
    }
