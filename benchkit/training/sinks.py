"""Which sink a run's metric records go to: the ingest API of a Bench server, or metric part
objects in any other store (see :mod:`benchkit.training.sender` for the sink contract)."""

from __future__ import annotations

from benchkit.store import Store, open_store
from benchkit.store.http import HttpStore
from benchkit.training.sender import Sink, StoreSink
from benchkit.training.server_sink import ServerSink


def sink_for(store: Store | str) -> Sink:
    """The sink for a run's store."""
    store = open_store(store)
    if isinstance(store, HttpStore):
        return ServerSink(store.client)
    return StoreSink(store)
