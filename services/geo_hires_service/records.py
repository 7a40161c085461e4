"""The job record: its table, its states and its frozen view, and the engine that holds it.

Columns added after the first release are nullable or carry a server default, so that a store
made by an older release gains them on start (:func:`add_missing_columns`, additive only).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from geo_hires.errors import ConfigError, GeoHiresError

__all__ = [
    "ACTIVE",
    "FINISHED",
    "Base",
    "Job",
    "JobRow",
    "JobState",
    "QueueFullError",
    "add_missing_columns",
    "make_engine",
]


class QueueFullError(GeoHiresError, RuntimeError):
    """The queue, the tenant's share of it or the tenant's storage is full; retry later."""

    def __init__(self, message: str, *, retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobState(enum.StrEnum):
    """Life of a job: queued → running → succeeded | failed | cancelled (running → queued
    again when its runner drains or loses its lease)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (sa.UniqueConstraint("tenant", "idempotency_key", name="uq_tenant_key"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(64), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    scene_path: Mapped[str] = mapped_column(sa.Text)
    scene_name: Mapped[str] = mapped_column(sa.String(255))
    options: Mapped[str] = mapped_column(sa.Text)
    units_done: Mapped[int] = mapped_column(default=0)
    units_total: Mapped[int] = mapped_column(default=0)
    detections: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[float] = mapped_column(sa.Float, index=True)
    started_at: Mapped[float | None] = mapped_column(sa.Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(sa.Float, default=None)
    # added after the first release (see the module docstring)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    lease_expires: Mapped[float | None] = mapped_column(sa.Float, default=None)
    scene_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    output_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    request_id: Mapped[str | None] = mapped_column(sa.String(200), default=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """A job as stored (timestamps in seconds since the epoch, UTC)."""

    id: str
    tenant: str
    state: JobState
    scene_path: str
    scene_name: str
    options: dict[str, Any]
    units_done: int
    units_total: int
    detections: int | None
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    scene_bytes: int = 0
    output_bytes: int = 0
    request_id: str | None = None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)} - {"state", "options"}
        values = {k: getattr(row, k) for k in fields}
        values["scene_bytes"] = values["scene_bytes"] or 0
        values["output_bytes"] = values["output_bytes"] or 0
        return cls(state=JobState(row.state), options=json.loads(row.options), **values)


def make_engine(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///PATH`` (WAL, synchronous FULL) or ``postgresql://…``.

    ``postgresql://`` URLs use the psycopg 3 driver.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a 202 means the record is on disk
            cur.close()

        return engine
    if url.startswith("postgresql+psycopg://"):
        return sa.create_engine(url, pool_pre_ping=True)
    raise ConfigError(f"--db must be sqlite:///PATH or postgresql://…, got {url.split(':')[0]}:")


def add_missing_columns(engine: Engine) -> None:
    """Add the columns a store made by an older release lacks (additive changes only)."""
    have = {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    for column in JobRow.__table__.columns:
        if column.name in have:
            continue
        ddl = sa.schema.CreateColumn(cast("sa.Column[Any]", column)).compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE jobs ADD COLUMN {ddl}"))
        except (OperationalError, ProgrammingError):  # another replica added it meanwhile
            if column.name not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}:
                raise
