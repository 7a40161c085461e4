"""Durable job records for the HTTP service: SQLAlchemy 2 over SQLite or PostgreSQL.

Why a database and not replica memory: a scene takes seconds to hours, replicas restart, and
several replicas may serve one deployment. Every state change is one short transaction, so a
SIGKILLed service restarted on the same store finds every job as it was. SQLite in the data
dir (WAL, synchronous FULL) is the embedded default and serves **one** runner; PostgreSQL is
for any number of runner replicas, which coordinate through leases (:mod:`.leases`).

Every change is a conditional ``UPDATE … WHERE`` checked by its row count, which is atomic on
both databases without ``SELECT … FOR UPDATE``. Times come from an injected clock (seconds since
the epoch), so leases and retention are tested without sleeping. Tenants are opaque ids derived
from tokens by the caller; a token never reaches the store.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from geo_hires_service.leases import Leases
from geo_hires_service.records import (
    ACTIVE,
    FINISHED,
    Base,
    Job,
    JobRow,
    JobState,
    QueueFullError,
    add_missing_columns,
    make_engine,
)
from geo_hires_service.security import Rejected

__all__ = [
    "FINISHED", "JOB_ID", "REQUEST_ID", "Job", "JobState", "JobStore", "QueueFullError",
    "make_engine",
]  # fmt: skip

JOB_ID = re.compile(r"[0-9a-f]{32}")
"""What a job id is (``uuid4().hex``)."""
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""A client's ``X-Request-ID`` worth keeping: short, and safe in logs and the store."""


SUBMIT_LOCK = 0x67656F68
"""The PostgreSQL advisory lock key every submission's transaction takes ("geoh")."""


@dataclasses.dataclass(frozen=True)
class _Limits:
    total: int | None
    per_tenant: int | None
    quota_bytes: int | None


def _admit(s: Session, tenant: str, limits: _Limits, scene_bytes: int) -> None:
    """Refuse a job the queue or the tenant's storage has no room for, inside the transaction
    that records it (under :data:`SUBMIT_LOCK` on PostgreSQL)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SUBMIT_LOCK})
    _count_room(s, tenant, limits)
    quota = limits.quota_bytes
    if quota is not None and scene_bytes and _usage(s, tenant) + scene_bytes > quota:
        raise Rejected(
            f"the upload would exceed your storage quota of {quota:,} bytes; delete finished "
            "jobs (DELETE /v1/jobs/ID) and send it again",
            status=413,
        )


def _count_room(s: Session, tenant: str, limits: _Limits) -> None:
    active = JobRow.state.in_(ACTIVE)
    if limits.total is not None:
        n = s.scalar(sa.select(sa.func.count()).where(active)) or 0
        if n >= limits.total:
            raise QueueFullError(f"the service has {n} jobs queued or running; retry later")
    if limits.per_tenant is not None:
        n = s.scalar(sa.select(sa.func.count()).where(active, JobRow.tenant == tenant)) or 0
        if n >= limits.per_tenant:
            raise QueueFullError(
                f"you have {n} jobs queued or running (limit {limits.per_tenant}); wait for one "
                "to finish or cancel one"
            )


def _usage(s: Session, tenant: str) -> int:
    total = sa.func.coalesce(sa.func.sum(JobRow.scene_bytes + JobRow.output_bytes), 0)
    return int(s.scalar(sa.select(total).where(JobRow.tenant == tenant)) or 0)


class JobStore(Leases):
    """Job records in one database (see the module docstring); the runner's side of a job's
    life (claim, lease, progress, outcome) is :class:`~.leases.Leases`."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = make_engine(url)
        self.clock = clock
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def shared(self) -> bool:
        """Whether several runners may share this store (PostgreSQL; SQLite serves one)."""
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._session() as s, s.begin():
            yield s

    def _update(self, job_id: str, *where: Any, **values: Any) -> bool:
        """Update ``job_id`` only where ``where`` holds; True when it did."""
        with self._tx() as s:
            res = s.execute(sa.update(JobRow).where(JobRow.id == job_id, *where).values(**values))
            return bool(getattr(res, "rowcount", 0) == 1)

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
        scene_bytes: int = 0,
        request_id: str | None = None,
        quota_bytes: int | None = None,
    ) -> tuple[Job, bool]:
        """Record a queued job; returns ``(job, created)``.

        The same ``idempotency_key`` from the same tenant returns the first job
        (``created=False``) whatever else the request says. ``scene_bytes``: what an upload
        adds to the tenant's storage (0 for a scene by path).

        Raises:
            QueueFullError: ``max_active`` queued/running jobs in all, or
                ``max_active_per_tenant`` for this tenant.
            Rejected: (413) ``scene_bytes`` more would take the tenant past ``quota_bytes``.

        The limits are checked in the transaction that records the job, after taking a
        PostgreSQL advisory lock every submission takes: ingress replicas in several
        processes cannot both take the last room (one process also serialises its own).
        """
        if idempotency_key is not None:
            found = self._by_key(tenant, idempotency_key)
            if found is not None:
                return found, False
        if request_id is not None and not REQUEST_ID.fullmatch(request_id):
            request_id = None  # a client's header, as the request-id middleware would drop it
        row = JobRow(
            id=uuid.uuid4().hex,
            tenant=tenant,
            idempotency_key=idempotency_key,
            state=JobState.QUEUED.value,
            scene_path=scene_path,
            scene_name=scene_name[:255],  # the column's size (an object key may be longer)
            options=json.dumps(options, sort_keys=True),
            created_at=self.clock(),
            scene_bytes=scene_bytes,
            output_bytes=0,
            request_id=request_id,
        )
        limits = _Limits(max_active, max_active_per_tenant, quota_bytes)
        try:
            with self._tx() as s:
                _admit(s, tenant, limits, scene_bytes)
                s.add(row)
        except IntegrityError:  # the same key raced in from another request
            found = self._by_key(tenant, idempotency_key or "")
            if found is None:
                raise
            return found, False
        return Job.of(row), True

    def check_room(
        self, tenant: str, *, max_active: int | None, max_active_per_tenant: int | None
    ) -> None:
        """:class:`QueueFullError` now when a job would be refused for the queue's length:
        checked before an upload's body is read (``submit`` checks again as it records)."""
        with self._tx() as s:
            _count_room(s, tenant, _Limits(max_active, max_active_per_tenant, None))

    def submit_lookup(self, tenant: str, key: str) -> Job | None:
        """The tenant's job submitted with idempotency ``key``, if any."""
        return self._by_key(tenant, key)

    def _by_key(self, tenant: str, key: str) -> Job | None:
        with self._session() as s:
            row = s.scalars(
                sa.select(JobRow).where(JobRow.tenant == tenant, JobRow.idempotency_key == key)
            ).first()
            return Job.of(row) if row else None

    def get(self, job_id: str, *, tenant: str | None = None) -> Job | None:
        """The job, or ``None`` when it does not exist or belongs to another tenant (or the id
        is not one this store makes: a client's ``a%00b`` must be a 404, and PostgreSQL
        refuses NUL in text)."""
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._session() as s:
            row = s.get(JobRow, job_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            return Job.of(row)

    def list_jobs(
        self, tenant: str, *, limit: int = 50, offset: int = 0, state: JobState | None = None
    ) -> list[Job]:
        """The tenant's jobs (in ``state`` only, when given), newest first."""
        where = [JobRow.tenant == tenant]
        if state is not None:
            where.append(JobRow.state == state.value)
        with self._session() as s:
            rows = s.scalars(
                sa.select(JobRow)
                .where(*where)
                .order_by(JobRow.created_at.desc(), JobRow.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [Job.of(r) for r in rows]

    def cancel(self, job_id: str, *, tenant: str) -> Job | None:
        """Cancel a queued job at once; ask a running one to stop (its runner confirms).

        Returns the job as it now stands, or ``None`` when the tenant has no such job.
        """
        if self.get(job_id, tenant=tenant) is None:
            return None
        queued = JobRow.state == JobState.QUEUED.value
        done = {"state": JobState.CANCELLED.value, "finished_at": self.clock()}
        running = JobRow.state == JobState.RUNNING.value
        for _ in range(2):  # a runner draining between the two may put it back in the queue
            if self._update(job_id, queued, **done):
                break
            if self._update(job_id, running, cancel_requested=True):
                break
        return self.get(job_id)

    def dismiss(self, job_id: str, *, tenant: str) -> Job | None:
        """OGC API dismiss: :meth:`cancel` a queued or running job, and mark a finished one
        cancelled, its bytes no longer counted (the caller removes its files; retention removes
        the record). ``None``: the tenant has no such job."""
        if self.cancel(job_id, tenant=tenant) is None:
            return None
        finished = JobRow.state.in_(FINISHED)
        self._update(
            job_id, finished, state=JobState.CANCELLED.value, scene_bytes=0, output_bytes=0
        )
        return self.get(job_id)

    def usage(self, tenant: str) -> int:
        """Bytes the tenant's jobs keep in the data dir: uploads and finished outputs."""
        with self._session() as s:
            return _usage(s, tenant)

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by ``(state, tenant)``."""
        with self._session() as s:
            rows = s.execute(
                sa.select(JobRow.state, JobRow.tenant, sa.func.count()).group_by(
                    JobRow.state, JobRow.tenant
                )
            ).all()
            return {(state, tenant): int(n) for state, tenant, n in rows}

    def finished_before(self, cutoff: float, *, limit: int = 500) -> list[Job]:
        """Jobs that finished before ``cutoff``, oldest first (what retention removes)."""
        with self._session() as s:
            rows = s.scalars(
                sa.select(JobRow)
                .where(JobRow.state.in_(FINISHED), JobRow.finished_at < cutoff)
                .order_by(JobRow.finished_at, JobRow.id)
                .limit(limit)
            ).all()
            return [Job.of(r) for r in rows]

    def delete(
        self, job_id: str, *, tenant: str | None = None, before: float | None = None
    ) -> bool:
        """Remove a finished job's record (of ``tenant``, finished before ``before``, when
        given); True when this call removed it. Its files are the caller's."""
        where = [JobRow.id == job_id, JobRow.state.in_(FINISHED)]
        if tenant is not None:
            where.append(JobRow.tenant == tenant)
        if before is not None:
            where.append(JobRow.finished_at < before)
        with self._tx() as s:
            res = s.execute(sa.delete(JobRow).where(*where))
            return bool(getattr(res, "rowcount", 0) == 1)

    def refers_to(self, path_prefix: str) -> bool:
        """Whether a job's scene lies under ``path_prefix`` (an upload still in use)."""
        with self._session() as s:
            hit = s.scalars(
                sa.select(JobRow.id)
                .where(JobRow.scene_path.startswith(path_prefix, autoescape=True))
                .limit(1)
            ).first()
            return hit is not None
