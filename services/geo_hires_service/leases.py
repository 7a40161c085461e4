"""The runner's side of a job's life: claim it under a lease, renew the lease while it runs,
and record the outcome only while the lease is still its own.

A lease is an owner (one runner slot: ``runner@<node>/<pid>/<slot>``) and an expiry. Any number
of runners poll one PostgreSQL store: a runner claims the oldest job that is queued *or whose
lease expired* (its runner died with its node), so a lost runner's job is taken over by
another and resumes from its journal. Every write a runner makes about a job (progress, outcome,
release) is conditioned on ``lease_owner = me``: a runner that lost its lease cannot overwrite
what the new owner records, and stops at its next unit. A job whose runner was lost
``max_attempts`` times fails (a scene that kills every node it meets must not loop forever).

Expiry compares the clocks of different hosts: keep them in sync (NTP) to well within the lease.
SQLite serves one runner: there, :meth:`Leases.recover` requeues at start every running job
whose runner process is gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from geo_hires_service.records import Job, JobRow, JobState

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Leases"]

_RUNNING = JobRow.state == JobState.RUNNING.value


def _alive_here(owner: str | None) -> bool:
    """Whether a lease owner (``runner@<node>/<pid>/<slot>``) is a live process here. A
    SQLite store is one machine's file, so its runners are this machine's processes."""
    try:
        pid = int((owner or "").split("/")[-2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False  # this process is starting: whatever it held before, it lost
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _expired(now: float) -> Any:
    return sa.and_(_RUNNING, sa.or_(JobRow.lease_expires.is_(None), JobRow.lease_expires < now))


class Leases:
    """Claim, renew, release and finish jobs under leases (mixed into ``JobStore``)."""

    clock: Callable[[], float]
    max_attempts: int = 3

    if TYPE_CHECKING:
        _session: sessionmaker[Session]

        def _update(self, job_id: str, *where: Any, **values: Any) -> bool: ...
        def _tx(self) -> AbstractContextManager[Session]: ...
        def get(self, job_id: str, *, tenant: str | None = None) -> Job | None: ...

    def _claimable(self, now: float) -> Any:
        retry = sa.and_(
            _expired(now), ~JobRow.cancel_requested, JobRow.attempts < self.max_attempts
        )
        return sa.or_(JobRow.state == JobState.QUEUED.value, retry)

    def claim(self, owner: str, *, lease_s: float) -> Job | None:
        """Take the oldest job that is queued or whose lease expired, under a lease of
        ``lease_s`` seconds for ``owner``; ``None`` when there is none."""
        self.reap()
        while True:
            now = self.clock()
            with self._session() as s:
                job_id = s.scalars(
                    sa.select(JobRow.id)
                    .where(self._claimable(now))
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(1)
                ).first()
            if job_id is None:
                return None
            if self._update(
                job_id,
                self._claimable(now),
                state=JobState.RUNNING.value,
                lease_owner=owner,
                lease_expires=now + lease_s,
                started_at=now,
                attempts=JobRow.attempts + 1,
            ):
                return self.get(job_id)

    def reap(self) -> int:
        """Finish the expired leases no runner should take: a cancel that was asked for
        (cancelled), a job whose runner was lost ``max_attempts`` times (failed)."""
        now = self.clock()
        done = {"finished_at": now, "lease_owner": None, "lease_expires": None}
        lost = (
            f"the job's runner was lost {self.max_attempts} times while it ran (its node died "
            "or ran out of memory); resubmit it with a smaller block"
        )
        with self._tx() as s:
            a = s.execute(
                sa.update(JobRow)
                .where(_expired(now), JobRow.cancel_requested)
                .values(state=JobState.CANCELLED.value, **done)
            )
            b = s.execute(
                sa.update(JobRow)
                .where(_expired(now), JobRow.attempts >= self.max_attempts)
                .values(state=JobState.FAILED.value, error=lost, **done)
            )
            return int(getattr(a, "rowcount", 0)) + int(getattr(b, "rowcount", 0))

    def _mine(self, owner: str) -> tuple[Any, Any]:
        return _RUNNING, JobRow.lease_owner == owner

    def renew(self, job_id: str, owner: str, *, lease_s: float) -> bool:
        """Extend ``owner``'s lease; False when it is no longer ``owner``'s."""
        return self._update(job_id, *self._mine(owner), lease_expires=self.clock() + lease_s)

    def release(self, job_id: str, owner: str) -> bool:
        """Put ``owner``'s running job back in the queue (a draining runner); its journal
        keeps the finished units for the next runner."""
        return self._update(
            job_id,
            *self._mine(owner),
            state=JobState.QUEUED.value,
            lease_owner=None,
            lease_expires=None,
        )

    def progress(self, job_id: str, owner: str, *, done: int, total: int) -> bool:
        """Record units done of total; False when the lease is no longer ``owner``'s."""
        return self._update(job_id, *self._mine(owner), units_done=done, units_total=total)

    def _finish(self, job_id: str, owner: str, state: JobState, **values: Any) -> bool:
        return self._update(
            job_id,
            *self._mine(owner),
            state=state.value,
            finished_at=self.clock(),
            lease_owner=None,
            lease_expires=None,
            **values,
        )

    def succeed(self, job_id: str, owner: str, *, detections: int, output_bytes: int = 0) -> bool:
        return self._finish(
            job_id, owner, JobState.SUCCEEDED, detections=detections, output_bytes=output_bytes
        )

    def fail(self, job_id: str, owner: str, *, error: str, output_bytes: int = 0) -> bool:
        return self._finish(job_id, owner, JobState.FAILED, error=error, output_bytes=output_bytes)

    def cancelled(self, job_id: str, owner: str, *, output_bytes: int = 0) -> bool:
        """The runner confirms a requested cancel: running → cancelled."""
        return self._finish(job_id, owner, JobState.CANCELLED, output_bytes=output_bytes)

    def recover(self) -> int:
        """At the start of a single-runner (SQLite) service: running jobs go back to the
        queue (their journal resumes them), or to cancelled when a cancel was asked, or to
        failed when they were running at ``max_attempts`` stops of the service: a scene that
        takes the process down must not loop forever. A job whose runner process is still
        alive on this machine (an old replica draining while Serve starts its successor) is
        left to it; if that runner hangs instead, its lease expires and :meth:`claim` takes
        the job then."""
        lost = (
            f"the service stopped {self.max_attempts} times while the job ran (it ran out of "
            "memory, or was restarted); resubmit it with a smaller block"
        )
        again = JobRow.attempts < self.max_attempts
        with self._tx() as s:
            owners = s.execute(sa.select(JobRow.id, JobRow.lease_owner).where(_RUNNING)).all()
            live = [job_id for job_id, owner in owners if _alive_here(owner)]
            lost_runner = sa.and_(_RUNNING, JobRow.id.not_in(live))
            res = s.execute(
                sa.update(JobRow)
                .where(lost_runner, ~JobRow.cancel_requested, again)
                .values(state=JobState.QUEUED.value, lease_owner=None, lease_expires=None)
            )
            s.execute(
                sa.update(JobRow)
                .where(lost_runner, ~JobRow.cancel_requested, ~again)
                .values(
                    state=JobState.FAILED.value,
                    error=lost,
                    finished_at=self.clock(),
                    lease_owner=None,
                    lease_expires=None,
                )
            )
            s.execute(
                sa.update(JobRow)
                .where(lost_runner, JobRow.cancel_requested)
                .values(
                    state=JobState.CANCELLED.value,
                    finished_at=self.clock(),
                    lease_owner=None,
                    lease_expires=None,
                )
            )
            return int(getattr(res, "rowcount", 0))
