"""Experiment tracking over HTTP: metric ingest, charts, raw points, run logs and the runs
table, all within the caller's project (``Authorization: Bearer <key>``).

``POST /api/v1/runs/{run}/metrics`` takes a batch ``{"writer", "first_seq", "records"}``
(gzip accepted): a retried batch is stored once, a batch that starts after a gap is answered
409 with ``expected_seq``. Bodies are read with a size cap while they arrive.
"""

from __future__ import annotations

import json
import zlib
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, ValidationError

from benchkit.server.api.deps import API, Reader, ServicesDep, Writer
from benchkit.server.services import downsample as ds
from benchkit.server.services import metrics
from benchkit.server.services.errors import BadRequest, TooLarge
from benchkit.server.services.ingest import MAX_RECORDS

router = APIRouter(prefix=API, tags=["tracking"])

#: an ingest body may be this large as sent, and this large once decompressed
MAX_BODY = 4 * 1024 * 1024
MAX_JSON = 16 * 1024 * 1024

RunId = Annotated[
    str, Path(max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="a run id")
]
MetricKey = Annotated[str, Query(min_length=1, max_length=250, description="a metric name")]
Buckets = Annotated[int, Query(ge=1, le=ds.MAX_BUCKETS, description="at most this many buckets")]
Step = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


class IngestBatch(BaseModel):
    """Records ``first_seq``, ``first_seq + 1``, ... of one writer (seqs count from 1)."""

    writer: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:-]+$")
    first_seq: int = Field(ge=1, le=2**63 - 1)
    #: ``{"t": unix time, "step": int, "values": {name: number | "NaN" | "Infinity" |
    #: "-Infinity"}}`` or ``{"t": ..., "message": text}``
    records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS)


class IngestEnvelope(IngestBatch):
    """What the route validates: the batch's fields, and ``records`` a list of at most
    :data:`MAX_RECORDS`, each left to :func:`~benchkit.server.services.ingest.parse_batch`
    (which checks every record once, in bulk, and names a bad one by its seq; validating each
    as a dict here too would copy every record and cost as much as storing it)."""

    records: list[Any] = Field(max_length=MAX_RECORDS)  # type: ignore[assignment]


class Acked(BaseModel):
    writer: str
    next_seq: int
    acked_through: int
    inserted: int
    skipped: int


class RunMetrics(BaseModel):
    run_id: str
    metrics: dict[str, dict[str, Any]]
    #: per writer, the next sequence number the server expects
    writers: dict[str, int]


class ChartSeries(BaseModel):
    run: str
    name: str
    status: str | None
    key: str
    range: list[int]
    points: int
    tier: int
    x: list[int]
    time: list[float]
    last: list[float | None]
    min: list[float | None]
    max: list[float | None]
    count: list[int]
    nonfinite: list[list[Any]]


class Chart(BaseModel):
    key: str
    series: list[ChartSeries]


class Points(BaseModel):
    key: str
    points: list[dict[str, Any]]
    next: list[int] | None


class LogLine(BaseModel):
    t: float
    text: str


class Log(BaseModel):
    lines: list[LogLine]


class RunsTable(BaseModel):
    columns: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    total: int
    sort: str
    order: str
    query: str
    monitor: str | None
    mode: str | None
    hidden_columns: int


INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": IngestBatch.model_json_schema()}},
    }
}


async def _read_json(request: Request) -> Any:
    """The JSON body, gunzipped when sent so, refused with 413 beyond the caps."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"an ingest batch may be at most {MAX_BODY} bytes; send smaller ones")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = d.decompress(raw, MAX_JSON)
        except zlib.error as e:
            raise BadRequest(f"the body is not valid gzip: {e}") from e
        if d.unconsumed_tail:
            raise TooLarge(f"an ingest batch may be at most {MAX_JSON} bytes uncompressed")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from e


@router.post("/runs/{run_id}/metrics", response_model=Acked, openapi_extra=INGEST_BODY)
async def ingest(
    run_id: RunId, request: Request, principal: Writer, services: ServicesDep
) -> Acked:
    """Store a batch of a writer's journal records (idempotent: a replay is skipped; a batch
    after a gap gets 409 with ``expected_seq``)."""
    body = await _read_json(request)
    try:
        batch = IngestEnvelope.model_validate(body)
    except ValidationError as e:
        raise BadRequest(f"invalid batch: {e.errors(include_url=False)[:3]}") from e
    ack = await to_thread.run_sync(
        services.tracking.ingest,
        principal.project_id,
        run_id,
        batch.writer,
        batch.first_seq,
        batch.records,
    )
    return Acked(**ack.to_json())


@router.get("/runs/{run_id}/metrics", response_model=RunMetrics)
def run_metrics(run_id: RunId, principal: Reader, services: ServicesDep) -> RunMetrics:
    """Every metric's summary (last, min, max, count) and the writers' cursors."""
    return RunMetrics(**services.tracking.run_metrics(principal.project_id, run_id))


@router.get("/runs/{run_id}/chart", response_model=Chart)
def run_chart(
    run_id: RunId,
    key: MetricKey,
    principal: Reader,
    services: ServicesDep,
    n: Buckets = ds.DEFAULT_BUCKETS,
    x0: Step = None,
    x1: Step = None,
) -> Chart:
    """At most ``n`` buckets (last, min, max per bucket) of metric ``key`` over steps
    ``[x0, x1]``; zooming in asks again with a narrower range."""
    return Chart(**services.tracking.chart(principal.project_id, [run_id], key, x0, x1, n))


@router.get("/charts", response_model=Chart)
def compare_chart(
    key: MetricKey,
    principal: Reader,
    services: ServicesDep,
    run: Annotated[list[str], Query(max_length=20, description="run ids to overlay")],
    n: Buckets = ds.DEFAULT_BUCKETS,
    x0: Step = None,
    x1: Step = None,
) -> Chart:
    """Metric ``key`` of several runs, for overlaid curves."""
    return Chart(**services.tracking.chart(principal.project_id, run, key, x0, x1, n))


@router.get("/runs/{run_id}/points", response_model=Points)
def run_points(
    run_id: RunId,
    key: MetricKey,
    principal: Reader,
    services: ServicesDep,
    after: Annotated[
        str | None, Query(max_length=80, pattern=r"^\d+,\d+,\d+$", description="a page's next")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=metrics.MAX_PAGE)] = metrics.MAX_PAGE,
) -> Points:
    """Every stored point of metric ``key`` (full fidelity), a page at a time."""
    cursor = tuple(int(p) for p in after.split(",")) if after else None
    page = services.tracking.points(principal.project_id, run_id, key, cursor, limit)  # type: ignore[arg-type]
    return Points(**page)


@router.get("/runs/{run_id}/log", response_model=Log)
def run_log(
    run_id: RunId,
    principal: Reader,
    services: ServicesDep,
    after: Annotated[float | None, Query(description="unix time: only later lines")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
) -> Log:
    """The run's console messages in time order."""
    return Log(lines=services.tracking.log(principal.project_id, run_id, after, limit))


@router.get("/tracking/runs", response_model=RunsTable)
def runs_table(
    principal: Reader,
    services: ServicesDep,
    sort: Annotated[str | None, Query(max_length=300)] = None,
    order: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
    q: Annotated[str, Query(max_length=1000, description="filter: lr>=0.01 status=finished")] = "",
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> RunsTable:
    """The runs with a column per hyperparameter and per metric, sorted (by the evaluation
    criterion by default) and filtered; statuses include ``lost``."""
    table = services.tracking.table(principal.project_id, sort, order, q, limit)
    return RunsTable(**table.to_json())


@router.get("/tracking/runs/{run_id}", response_model=dict[str, Any])
def run_detail(run_id: RunId, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """One run: record, status (``lost`` when silent), metric summaries, checkpoints."""
    return services.tracking.get_run(principal.project_id, run_id).to_json()
