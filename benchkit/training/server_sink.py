"""The Bench server sink: journaled metric records posted to the server's ingest API.

A batch (consecutive records ``first_seq..last_seq`` of one writer, see
:mod:`benchkit.training.sender`) becomes one ``POST /api/v1/runs/<run>/metrics`` with the
writer id, ``first_seq`` and the records, gzipped. The server stores each record once whatever
the number of tries (it skips seqs it already holds) and answers ``acked_through``, which is
what :meth:`ServerSink.send` returns; a server that says a batch starts after a gap
(409 ``expected_seq``) gets ``expected_seq - 1`` back, so the sender rewinds and resends from
there.

Connection errors, timeouts, 408, 429 and 5xx raise :class:`TransientError` (the sender keeps
the batch and tries again after a backoff, at least ``Retry-After`` when the server sent one),
for as long as the process lives; any other 4xx raises
:class:`~benchkit.training.sender.SinkRejected` (the records stay in the journal for
``benchkit sync``). The HTTP client itself does not retry: the sender's backoff is the only one.

On the wire a value is a JSON number, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has
no NaN; the journal keeps them as floats). A logged value that is not a number (a string) goes
into the record's message as ``name=value``, so nothing logged is dropped.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import requests

from benchkit.api_client import ApiClient
from benchkit.errors import CredentialsError, StoreConnectionError, StoreError
from benchkit.training.sender import Batch, SinkRejected

#: seconds to connect, and to wait for the server's answer to one batch
TIMEOUT = (5.0, 60.0)
#: the longest ``Retry-After`` honoured (a server asking for more gets retried sooner)
MAX_RETRY_AFTER = 60.0
TRANSIENT_STATUS = (408, 425, 429, 500, 502, 503, 504)


class TransientError(Exception):
    """The server could not take the batch now; ``retry_after`` seconds is its wish."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def wire_value(value: Any) -> float | str | None:
    """A journaled value as the ingest API takes it; None when it is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return value
    return None


def wire_record(payload: dict[str, Any]) -> dict[str, Any]:
    """One journal record (``{"seq", "step", "time", "values"}`` or ``{"seq", "time",
    "message"}``) as an ingest record (``{"t", "step", "values", "message"}``)."""
    out: dict[str, Any] = {"t": float(payload.get("time") or 0.0)}
    if payload.get("step") is not None:
        out["step"] = int(payload["step"])
    texts = [str(payload["message"])] if payload.get("message") is not None else []
    values = {}
    for k, v in (payload.get("values") or {}).items():
        w = wire_value(v)
        if w is None:
            texts.append(f"{k}={v}")
        else:
            values[k] = w
    if values:
        out["values"] = values
    if texts:
        out["message"] = "; ".join(texts)
    return out


def _retry_after(resp: requests.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(resp.headers.get("Retry-After", 0))))
    except ValueError:
        return 0.0


class ServerSink:
    """Posts batches to a Bench server (the client of an :class:`~benchkit.store.http.HttpStore`)."""

    def __init__(self, client: ApiClient) -> None:
        # a client of its own without retries: the sender's backoff decides when to try again
        self.client = ApiClient(client.url, client.api_key, client.project_id, retries=0)

    def describe(self) -> str:
        return f"the Bench server {self.client.url}"

    def send(self, batch: Batch) -> int:
        records = [wire_record(json.loads(p)) for p in batch.records]
        body = json.dumps(
            {"writer": batch.writer, "first_seq": batch.first_seq, "records": records},
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
        what = f"metrics of run {batch.run_id}"
        try:
            resp = self.client.request(
                "POST",
                self.client.path("runs", batch.run_id, "metrics"),
                expect=(200, 409, *TRANSIENT_STATUS),
                what=what,
                data=gzip.compress(body, 5),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                timeout=TIMEOUT,
            )
        except StoreConnectionError as e:  # down, restarting, a timeout: try again later
            raise TransientError(str(e)) from e
        except (StoreError, CredentialsError) as e:  # a wrong, revoked or read-only key, an
            raise SinkRejected(str(e)) from e  # incompatible server: retrying cannot help
        if resp.status_code == 200:
            return int(resp.json()["acked_through"])
        if resp.status_code == 409:
            expected = resp.json().get("expected_seq")
            if isinstance(expected, int):
                return expected - 1  # the server misses earlier records: rewind to them
            raise SinkRejected(str(self.client.error(resp, what)))
        raise TransientError(
            f"the server answered {resp.status_code}", retry_after=_retry_after(resp)
        )
