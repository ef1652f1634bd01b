"""The ``jobs`` table: one row per remote job, the state machine of :mod:`benchkit.server.services.jobs`.

``state`` moves queued → starting → running → one terminal state (succeeded, failed,
cancelled, timed_out, lost) and is written once there: every update that ends a job is
guarded by ``state IN (active states)`` in SQL. Cancel intent is its own column,
``cancel_requested_at``, written before anything is sent to the engine, so a cancel survives
a server restart and is repeated until the engine confirms. The job's spec is stored without
its environment (the job's API key is only ever in the engine's environment for the job).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from benchkit.server.db.models import Base, UTCDateTime, utcnow


class Job(Base):
    __tablename__ = "jobs"

    project_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    executor: Mapped[str] = mapped_column(String(16))
    #: the engine's handle (None until submitted)
    handle: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the :class:`~benchkit.remote.spec.JobSpec` without its environment
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    #: the id of the API key the job uses (revoked when it ends)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: "user", "max_duration" or "stall": what the job ends as once stopped
    cancel_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cancel_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: when the engine first reported the job ended while no exit.json was there yet
    engine_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: the last time the job wrote output or a metric (stall timeout)
    activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    metric_parts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: True once the engine's hold on the job (directory, slot, record) was released
    released: Mapped[bool] = mapped_column(Boolean, default=False)
