"""Who is asking and what they may see: the tenant of a request, its own jobs."""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException

from geo_hires_service.schemas import ServiceConfig
from geo_hires_service.store import Job, JobState, JobStore

__all__ = ["finished_job", "own_job", "state", "tenant"]


def state(request: Request) -> tuple[ServiceConfig, JobStore]:
    """The service config and the job store the app was built with."""
    return request.app.state.config, request.app.state.store


def tenant(request: Request) -> str:
    """The tenant whose bearer token the request carries (401 without a known one)."""
    found = request.app.state.config.tokens.tenant(request.headers.get("authorization"))
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
    """The caller's job, which must have succeeded (409 otherwise)."""
    job = own_job(request, job_id)
    if job.state is not JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {job.state.value}; no result yet")
    return job
