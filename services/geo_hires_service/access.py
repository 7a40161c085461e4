"""Who is asking and what they may see: the tenant of a request, its own jobs."""

from __future__ import annotations

import base64
from pathlib import Path

from fastapi import Request
from starlette.exceptions import HTTPException

from geo_hires_service.schemas import ServiceConfig
from geo_hires_service.store import Job, JobState, JobStore, QueueFullError

__all__ = [
    "finished_job", "kept_file", "own_job", "state", "storage_room", "tenant",
]  # fmt: skip


def state(request: Request) -> tuple[ServiceConfig, JobStore]:
    """The service config and the job store the app was built with."""
    return request.app.state.config, request.app.state.store


def _as_bearer(authorization: str | None) -> str | None:
    """``Basic base64(user:TOKEN)`` → ``Bearer TOKEN``: the token as an HTTP Basic password,
    for clients (QGIS's authentication manager) that send Basic but no custom header."""
    if not authorization or not authorization.startswith("Basic "):
        return authorization
    try:
        decoded = base64.b64decode(authorization.removeprefix("Basic ").strip(), validate=True)
    except ValueError:
        return None
    _, sep, token = decoded.decode("utf-8", "replace").partition(":")
    return f"Bearer {token}" if sep and token else None


def tenant(request: Request) -> str:
    """The tenant whose token the request carries, as a bearer token or as the password of
    HTTP Basic (401 without a known one)."""
    header = _as_bearer(request.headers.get("authorization"))
    found = request.app.state.config.tokens.tenant(header)
    if found is None:
        raise HTTPException(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
    request.state.tenant = str(found)  # for the error metrics of this request
    return str(found)


def own_job(request: Request, job_id: str) -> Job:
    """The caller's job ``job_id`` (404 for another tenant's: its existence is not told)."""
    job = request.app.state.store.get(job_id, tenant=tenant(request))
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def finished_job(request: Request, job_id: str) -> Job:
    """The caller's job, which must have succeeded: 409 while it may still (queued, running),
    410 when it never will (failed, cancelled), as OGC API Processes answers."""
    job = own_job(request, job_id)
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        raise HTTPException(410, f"job {job_id} is {job.state.value}; it has no result")
    if job.state is not JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {job.state.value}; no result yet")
    return job


def kept_file(job: Job, path: Path) -> Path:
    """A succeeded job's output file, or 410 when it is gone (removed while the request was
    on its way, or by hand): never the 500 a missing file would make of a download."""
    if not path.is_file():
        raise HTTPException(
            410, f"job {job.id}'s {path.name} is no longer kept; run the job again"
        )  # fmt: skip
    return path


def storage_room(config: ServiceConfig, store: JobStore, who: str) -> int | None:
    """Bytes the tenant may still store (``None``: no quota); ``429`` when none are left,
    however the job would be submitted (``/v1`` or OGC API execution)."""
    quota = config.tenant_quota_bytes
    if quota is None:
        return None
    used = store.usage(who)
    if used >= quota:
        raise QueueFullError(
            f"your jobs keep {used:,} bytes and your storage quota is {quota:,}; delete finished "
            f"jobs (DELETE /v1/jobs/ID) or wait until they expire, {config.retain_days:g} days "
            "after they finish",
            retry_after_s=3600,
        )
    return quota - used
