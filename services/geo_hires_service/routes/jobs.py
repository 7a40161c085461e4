"""``/v1/jobs``: submit a scene, list, read, download the result, cancel, remove."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from geo_hires_service.access import (
    finished_job,
    kept_file,
    own_job,
    state,
    storage_room,
    tenant,
)
from geo_hires_service.observe import job_fields, log, metrics
from geo_hires_service.ogc import job_counts, path_prefix
from geo_hires_service.problems import answers
from geo_hires_service.retention import remove_files
from geo_hires_service.runner import JobFiles
from geo_hires_service.schemas import job_json
from geo_hires_service.security import Rejected
from geo_hires_service.store import FINISHED, Job
from geo_hires_service.uploads import (
    check_header,
    drop_upload,
    from_upload,
    from_uri,
    submit_body,
    uploading,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs")


_RECORDING = threading.Lock()
"""One upload recorded at a time: the quota's second look and the record, together."""


def _accepted(request: Request, job: Job) -> JSONResponse:
    root = path_prefix(request)
    return JSONResponse(job_json(job, root), 202, headers={"Location": f"{root}/v1/jobs/{job.id}"})


@router.post(
    "", status_code=202, openapi_extra={"requestBody": submit_body()},
    responses=answers(400, 401, 404, 408, 411, 413, 415, 429, 502, 507),
)  # fmt: skip
async def submit(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    who = tenant(request)
    config, store = state(request)

    def admit() -> tuple[Job | None, int | None]:  # the store: in a worker thread
        found = None if idempotency_key is None else store.submit_lookup(who, idempotency_key)
        if found is None:  # refused now, before an upload's body is read
            store.check_room(who, max_active=config.max_active,
                             max_active_per_tenant=config.max_active_per_tenant)  # fmt: skip
        return found, None if found else storage_room(config, store, who)

    found, room = await run_in_threadpool(admit)
    if found is not None:
        return _accepted(request, found)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        with uploading(who):
            path, name, options = await from_upload(request, config, room=room)
        source, size = "upload", Path(path).stat().st_size
    elif kind == "application/json":
        path, name, options = await from_uri(request, config)
        source, size = "uri", 0
    else:
        raise Rejected("send multipart/form-data (field 'scene') or JSON {uri}", status=415)

    def record() -> tuple[Job, bool]:  # the scene's header, the store: in a worker thread
        check_header(path, config, options)
        with _RECORDING:  # one record at a time here; the store orders other processes' own
            return store.submit(
                tenant=who,
                scene_path=str(path),
                scene_name=name,
                options=options.model_dump(),
                idempotency_key=idempotency_key,
                max_active=config.max_active,
                max_active_per_tenant=config.max_active_per_tenant,
                scene_bytes=size,
                request_id=request.headers.get("x-request-id"),
                quota_bytes=config.tenant_quota_bytes,  # re-checked as it is recorded
            )

    try:
        job, created = await run_in_threadpool(record)
    except BaseException:
        drop_upload(path, config)
        raise
    if not created:  # the same key raced in: the first request's job stands
        drop_upload(path, config)
    else:
        metrics().submitted.inc(tags={"tenant": who, "source": source})
        if size:
            metrics().upload_bytes.inc(size, tags={"tenant": who})
        log.info("job accepted", extra=job_fields(job, source=source, bytes=size))
    return _accepted(request, job)


@router.get("")
def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    jobs = state(request)[1].list_jobs(tenant(request), limit=limit, offset=offset)
    root = path_prefix(request)
    return {"jobs": [job_json(j, root) for j in jobs], "limit": limit, "offset": offset}


@router.get("/{job_id}", responses=answers(401, 404))
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """The job's state; once it succeeded, its counts per class (and per AOI polygon)."""
    job = own_job(request, job_id)
    counts = job_counts(state(request)[0].data_dir, job)
    return {**job_json(job, path_prefix(request)), "counts": counts}


@router.get("/{job_id}/result", response_model=None, responses=answers(401, 404, 409, 410))
def result(
    request: Request,
    job_id: str,
    format: Annotated[str, Query(pattern="^(geojson|gpkg)$")] = "geojson",
) -> Response:
    job = finished_job(request, job_id)
    files = JobFiles.of(state(request)[0].data_dir, job)
    if format == "gpkg":
        return FileResponse(
            kept_file(job, files.gpkg), media_type="application/geopackage+sqlite3",
            filename=files.gpkg.name,
        )  # fmt: skip
    return FileResponse(kept_file(job, files.geojson), media_type="application/geo+json")


@router.delete(
    "/{job_id}",
    status_code=202,
    responses={
        204: {"description": "the finished job and its files are removed"},
        **answers(401, 404),
    },
    response_model=None,
)
def cancel_or_remove(request: Request, job_id: str) -> Response:
    """A queued job is cancelled at once and a running one asked to stop (``202``); a
    finished one is removed with its files (``204``)."""
    config, store = state(request)
    job = own_job(request, job_id)
    if job.state.value in FINISHED:
        if store.delete(job.id, tenant=job.tenant):
            remove_files(job, config.data_dir)
            log.info("job removed", extra=job_fields(job))
        return Response(status_code=204)
    now = store.cancel(job_id, tenant=job.tenant)
    if now is None:
        raise HTTPException(404, f"no job {job_id}")
    return JSONResponse(job_json(now, path_prefix(request)), 202)
