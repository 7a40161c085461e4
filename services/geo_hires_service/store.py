"""Durable job records for the HTTP service: SQLAlchemy 2 over SQLite or PostgreSQL.

Why a database and not replica memory: a scene takes seconds to hours, replicas restart, and
several replicas may serve one deployment. Every state change is one short transaction, so a
SIGKILLed service restarted on the same store finds every job as it was: queued ones are still
queued, and :meth:`JobStore.recover` puts running ones back in the queue (their journal makes
the rerun a resume). SQLite in the data dir (WAL, synchronous FULL) is the embedded default;
PostgreSQL is for replicas that share one store.

Claiming a job is a conditional ``UPDATE … WHERE state = 'queued'`` checked by its row count,
which is atomic on both databases without ``SELECT … FOR UPDATE``: two runners never run one job.
Tenants are opaque ids derived from tokens by the caller; a token never reaches the store.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from geo_hires.errors import ConfigError, GeoHiresError

__all__ = ["Job", "JobState", "JobStore", "QueueFullError", "make_engine"]


class QueueFullError(GeoHiresError, RuntimeError):
    """The queue, or the tenant's share of it, is full; the client should retry later."""

    def __init__(self, message: str, *, retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobState(enum.StrEnum):
    """Life of a job: queued → running → succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


class _Base(DeclarativeBase):
    pass


class _JobRow(_Base):
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

    @classmethod
    def _of(cls, row: _JobRow) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)} - {"state", "options"}
        return cls(
            state=JobState(row.state),
            options=json.loads(row.options),
            **{k: getattr(row, k) for k in fields},
        )


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


class JobStore:
    """Job records in one database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._session() as s, s.begin():
            yield s

    def submit(
        self,
        *,
        tenant: str,
        scene_path: str,
        scene_name: str,
        options: dict[str, Any],
        idempotency_key: str | None = None,
        max_active: int | None = None,
        max_active_per_tenant: int | None = None,
    ) -> tuple[Job, bool]:
        """Record a queued job; returns ``(job, created)``.

        The same ``idempotency_key`` from the same tenant returns the first job
        (``created=False``) whatever else the request says.

        Raises:
            QueueFullError: ``max_active`` queued/running jobs in all, or
                ``max_active_per_tenant`` for this tenant.
        """
        if idempotency_key is not None:
            found = self._by_key(tenant, idempotency_key)
            if found is not None:
                return found, False
        self._check_room(tenant, max_active, max_active_per_tenant)
        row = _JobRow(
            id=uuid.uuid4().hex,
            tenant=tenant,
            idempotency_key=idempotency_key,
            state=JobState.QUEUED.value,
            scene_path=scene_path,
            scene_name=scene_name,
            options=json.dumps(options, sort_keys=True),
            created_at=time.time(),
        )
        try:
            with self._tx() as s:
                s.add(row)
        except IntegrityError:  # the same key raced in from another request
            found = self._by_key(tenant, idempotency_key or "")
            if found is None:
                raise
            return found, False
        return Job._of(row), True

    def submit_lookup(self, tenant: str, key: str) -> Job | None:
        """The tenant's job submitted with idempotency ``key``, if any."""
        return self._by_key(tenant, key)

    def _by_key(self, tenant: str, key: str) -> Job | None:
        with self._session() as s:
            row = s.scalars(
                sa.select(_JobRow).where(_JobRow.tenant == tenant, _JobRow.idempotency_key == key)
            ).first()
            return Job._of(row) if row else None

    def _check_room(self, tenant: str, total: int | None, per_tenant: int | None) -> None:
        with self._session() as s:
            active = _JobRow.state.in_(ACTIVE)
            if total is not None:
                n = s.scalar(sa.select(sa.func.count()).where(active)) or 0
                if n >= total:
                    raise QueueFullError(f"the service has {n} jobs queued or running; retry later")
            if per_tenant is not None:
                mine = sa.select(sa.func.count()).where(active, _JobRow.tenant == tenant)
                n = s.scalar(mine) or 0
                if n >= per_tenant:
                    raise QueueFullError(
                        f"you have {n} jobs queued or running (limit {per_tenant}); wait for one "
                        "to finish or cancel one"
                    )

    def get(self, job_id: str, *, tenant: str | None = None) -> Job | None:
        """The job, or ``None`` when it does not exist or belongs to another tenant."""
        with self._session() as s:
            row = s.get(_JobRow, job_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            return Job._of(row)

    def list_jobs(self, tenant: str, *, limit: int = 50, offset: int = 0) -> list[Job]:
        """The tenant's jobs, newest first."""
        with self._session() as s:
            rows = s.scalars(
                sa.select(_JobRow)
                .where(_JobRow.tenant == tenant)
                .order_by(_JobRow.created_at.desc(), _JobRow.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [Job._of(r) for r in rows]

    def claim(self) -> Job | None:
        """Move the oldest queued job to running and return it (``None`` when none is queued)."""
        while True:
            with self._session() as s:
                job_id = s.scalars(
                    sa.select(_JobRow.id)
                    .where(_JobRow.state == JobState.QUEUED.value)
                    .order_by(_JobRow.created_at, _JobRow.id)
                    .limit(1)
                ).first()
            if job_id is None:
                return None
            now = time.time()
            if self._move(
                job_id,
                (JobState.QUEUED,),
                state=JobState.RUNNING.value,
                started_at=now,
                attempts=_JobRow.attempts + 1,
            ):
                return self.get(job_id)

    def _move(self, job_id: str, allowed: tuple[JobState, ...], **values: Any) -> bool:
        """Update ``job_id`` only while its state is one of ``allowed``; True when it was."""
        with self._tx() as s:
            res = s.execute(
                sa.update(_JobRow)
                .where(_JobRow.id == job_id, _JobRow.state.in_([a.value for a in allowed]))
                .values(**values)
            )
            return bool(getattr(res, "rowcount", 0) == 1)

    def progress(self, job_id: str, *, done: int, total: int) -> bool:
        """Record units done of total for a running job."""
        return self._move(job_id, (JobState.RUNNING,), units_done=done, units_total=total)

    def succeed(self, job_id: str, *, detections: int) -> bool:
        return self._move(
            job_id,
            (JobState.RUNNING,),
            state=JobState.SUCCEEDED.value,
            detections=detections,
            finished_at=time.time(),
        )

    def fail(self, job_id: str, *, error: str) -> bool:
        return self._move(
            job_id,
            (JobState.RUNNING, JobState.QUEUED),
            state=JobState.FAILED.value,
            error=error,
            finished_at=time.time(),
        )

    def cancel(self, job_id: str, *, tenant: str) -> Job | None:
        """Cancel a queued job at once; ask a running one to stop (its runner confirms).

        Returns the job as it now stands, or ``None`` when the tenant has no such job.
        """
        if self.get(job_id, tenant=tenant) is None:
            return None
        now = time.time()
        if not self._move(
            job_id, (JobState.QUEUED,), state=JobState.CANCELLED.value, finished_at=now
        ):
            self._move(job_id, (JobState.RUNNING,), cancel_requested=True)
        return self.get(job_id)

    def dismiss(self, job_id: str, *, tenant: str) -> Job | None:
        """OGC API dismiss: :meth:`cancel` a queued or running job, and mark a finished one
        cancelled too (the caller removes its results). ``None``: the tenant has no such job."""
        if self.cancel(job_id, tenant=tenant) is None:
            return None
        self._move(job_id, (JobState.SUCCEEDED, JobState.FAILED), state=JobState.CANCELLED.value)
        return self.get(job_id)

    def cancelled(self, job_id: str) -> bool:
        """The runner confirms a requested cancel: running → cancelled."""
        return self._move(
            job_id, (JobState.RUNNING,), state=JobState.CANCELLED.value, finished_at=time.time()
        )

    def recover(self) -> int:
        """After a restart: running jobs go back to the queue (their journal resumes them)."""
        with self._tx() as s:
            res = s.execute(
                sa.update(_JobRow)
                .where(_JobRow.state == JobState.RUNNING.value, ~_JobRow.cancel_requested)
                .values(state=JobState.QUEUED.value)
            )
            s.execute(
                sa.update(_JobRow)
                .where(_JobRow.state == JobState.RUNNING.value, _JobRow.cancel_requested)
                .values(state=JobState.CANCELLED.value, finished_at=time.time())
            )
            return int(getattr(res, "rowcount", 0))
