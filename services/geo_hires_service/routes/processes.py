"""OGC API – Processes (Part 1: Core): the landing page, conformance, the ``detect`` process,
its asynchronous execution, and jobs (list, status, results, dismiss).

One process, ``detect``, whose inputs are the scene (a path under an allowed root, as a string
or a link ``{"href": …}``) and the detect options — described from the same JSON schema as
``/v1``'s job options, which are generated from the library's ``DetectOptions``, so both APIs
always offer the same options with the same limits. Jobs are the store's jobs: one submitted
to ``/v1/jobs`` is listed here too, and the tenant's token is required as on ``/v1``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from geo_hires.detect.options import option_fields
from geo_hires.models.card import shipped_models
from geo_hires_service.access import state, storage_room, tenant
from geo_hires_service.observe import job_fields, log, metrics
from geo_hires_service.ogc import (
    BAD_QUERY,
    CONFORMANCE,
    PROCESS_ID,
    REL,
    OgcError,
    base_url,
    job_counts,
    job_status,
    known_query,
    link,
    on_map,
    result_item,
    status_info,
)
from geo_hires_service.problems import answers, first_error, problem_doc
from geo_hires_service.retention import remove_files
from geo_hires_service.schemas import JobOptions
from geo_hires_service.security import Rejected, resolve_scene_uri, scene_name
from geo_hires_service.store import Job, JobState
from geo_hires_service.uploads import check_header, json_body

__all__ = ["router"]

router = APIRouter(tags=["OGC API - Processes"])
OPENAPI = "application/vnd.oai.openapi+json;version=3.1"
_SCENE = {
    "title": "scene",
    "description": "the GeoTIFF (or STAC item) to detect in: an absolute path under one of the "
    "service's allowed roots, as a string or as a link {\"href\": …}",
    "schema": {"oneOf": [
        {"type": "string", "maxLength": 4096},
        {"type": "object", "required": ["href"],
         "properties": {"href": {"type": "string", "maxLength": 4096}}},
    ]},
    "minOccurs": 1,
    "maxOccurs": 1,
}  # fmt: skip
_OUTPUTS = {
    "detections": ("the detections, RFC 7946 GeoJSON in WGS84", "application/geo+json"),
    "geopackage": ("detections, coverage (and counts) in the scene CRS, styled",
                   "application/geopackage+sqlite3"),
    "stac": ("the result's STAC item (label extension)", "application/geo+json"),
    "coverage": ("where each level looked, GeoJSON", "application/geo+json"),
}  # fmt: skip


def _inputs() -> dict[str, Any]:
    """The process inputs: the scene, then every detect option a client may set."""
    schema = JobOptions.model_json_schema()
    props = schema["properties"]
    inputs: dict[str, Any] = {"scene": _SCENE}
    for f in option_fields(service=True):
        spec = {k: v for k, v in props[f.name].items() if k not in ("title", "description")}
        if f.name == "model":
            spec["enum"] = shipped_models()
        inputs[f.name] = {"title": f.name, "description": f.metadata["help"], "schema": spec,
                          "minOccurs": 0, "maxOccurs": 1}  # fmt: skip
    return inputs


def _summary(root: str) -> dict[str, Any]:
    return {
        "id": PROCESS_ID,
        "title": "Detect objects in a georeferenced raster",
        "description": "Runs geo_hires' detection over a scene with a shipped model; the "
        "result is a vector layer of detections with their class and score.",
        "version": "1.0.0",
        "keywords": ["object detection", "remote sensing", "aircraft"],
        "jobControlOptions": ["async-execute", "dismiss"],
        "outputTransmission": ["reference"],
        "links": [
            link(f"{root}/processes/{PROCESS_ID}", "self", title="process description"),
            link(f"{root}/processes/{PROCESS_ID}/execution", REL + "execute", title="execute"),
        ],
    }


@router.get("/", responses=BAD_QUERY)
def landing(request: Request) -> dict[str, Any]:
    """The landing page (no token needed: it names resources, holds no data)."""
    known_query(request, frozenset({"f"}))
    root = base_url(request)
    return {
        "title": "geo_hires",
        "description": "Object detection in large georeferenced rasters: OGC API - Processes "
        "to run it, OGC API - Features to read the results.",
        "links": [
            link(f"{root}/", "self", title="this document"),
            link(f"{root}/openapi.json", "service-desc", OPENAPI, "the API definition"),
            link(f"{root}/docs", "service-doc", "text/html", "the API documentation"),
            link(f"{root}/conformance", "conformance", title="conformance classes"),
            link(f"{root}/conformance", REL + "conformance", title="conformance classes"),
            link(f"{root}/processes", REL + "processes", title="processes"),
            link(f"{root}/jobs", REL + "job-list", title="jobs"),
            link(f"{root}/collections", "data", title="results as feature collections"),
        ],
    }


@router.get("/conformance", responses=BAD_QUERY)
def conformance(request: Request) -> dict[str, list[str]]:
    known_query(request, frozenset({"f"}))
    return {"conformsTo": CONFORMANCE}


@router.get("/processes")
def processes(request: Request) -> dict[str, Any]:
    tenant(request)
    root = base_url(request)
    return {"processes": [_summary(root)], "links": [link(f"{root}/processes", "self")]}


def _process_id(process_id: str) -> None:
    if process_id != PROCESS_ID:
        raise OgcError(404, "no-such-process", f"no process {process_id!r}; try {PROCESS_ID!r}")


@router.get("/processes/{process_id}", responses={404: problem_doc("no such process")})
def process(request: Request, process_id: str) -> dict[str, Any]:
    tenant(request)
    _process_id(process_id)
    outputs = {k: {"title": k, "description": d, "schema": {"type": "string", "format": "uri",
                   "contentMediaType": t}} for k, (d, t) in _OUTPUTS.items()}  # fmt: skip
    return {**_summary(base_url(request)), "inputs": _inputs(), "outputs": outputs}


def _unwrap(value: Any) -> Any:
    """An input given as a qualified value ``{"value": …}`` → the value."""
    return value["value"] if isinstance(value, dict) and set(value) == {"value"} else value


def _scene_uri(inputs: dict[str, Any]) -> str:
    scene = _unwrap(inputs.pop("scene", None))
    if isinstance(scene, dict):
        scene = scene.get("href")
    if not isinstance(scene, str) or not scene:
        raise Rejected("input 'scene' is required: a path under an allowed root, or {href}")
    return scene.removeprefix("file://")


async def _parse(request: Request) -> tuple[str, Any]:
    raw = await json_body(request)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Rejected('send the execute request as JSON {"inputs": {…}}') from exc
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, dict):
        raise Rejected("the execute request needs an object 'inputs' (with at least 'scene')")
    inputs = dict(inputs)
    uri = _scene_uri(inputs)
    try:
        options = JobOptions.model_validate({k: _unwrap(v) for k, v in inputs.items()})
    except ValidationError as exc:
        raise Rejected(f"inputs: {first_error(exc.errors(), 'inputs')}") from exc
    return uri, options


@router.post("/processes/{process_id}/execution", status_code=201,
             responses=answers(400, 404, 408, 413, 415, 429, 502))  # fmt: skip
async def execute(
    request: Request,
    process_id: str,
    prefer: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Execute asynchronously (the only mode ``detect`` offers): ``201``, ``Location`` and
    the job's status."""
    who = tenant(request)
    _process_id(process_id)
    config, store = state(request)
    await run_in_threadpool(storage_room, config, store, who)  # the store: not on the loop
    uri, options = await _parse(request)

    def record() -> Job:  # the disk, a bucket, the store: in a worker thread
        path = resolve_scene_uri(uri, config.allow_roots)
        check_header(path, config, options)
        return store.submit(
            tenant=who, scene_path=str(path), scene_name=scene_name(path),
            options=options.model_dump(), max_active=config.max_active,
            max_active_per_tenant=config.max_active_per_tenant,
            request_id=request.headers.get("x-request-id"),
        )[0]  # fmt: skip

    job = await run_in_threadpool(record)
    metrics().submitted.inc(tags={"tenant": who, "source": "ogc"})
    log.info("job accepted", extra=job_fields(job, source="ogc", bytes=0))
    headers = {"Location": f"{base_url(request)}/jobs/{job.id}"}
    if prefer and "respond-async" in prefer:
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(status_info(request, job), 201, headers=headers)


@router.get("/jobs")
def jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """The caller's jobs, newest first (those submitted on ``/v1`` too), at most 1000 a
    page whatever ``limit`` asks."""
    limit = min(limit, 1000)
    found = state(request)[1].list_jobs(tenant(request), limit=limit + 1, offset=offset)
    root = base_url(request)
    links = [link(f"{root}/jobs?limit={limit}&offset={offset}", "self")]
    if len(found) > limit:
        links.append(link(f"{root}/jobs?limit={limit}&offset={offset + limit}", "next"))
    return {"jobs": [status_info(request, j) for j in found[:limit]], "links": links}


def _job(request: Request, job_id: str) -> Job:
    job = state(request)[1].get(job_id, tenant=tenant(request))
    if job is None:
        raise OgcError(404, "no-such-job", f"no job {job_id}")
    return job


@router.get("/jobs/{job_id}", responses=answers(404))
def job(request: Request, job_id: str) -> dict[str, Any]:
    return status_info(request, _job(request, job_id))


@router.delete("/jobs/{job_id}", responses=answers(404))
def dismiss(request: Request, job_id: str) -> dict[str, Any]:
    """Dismiss: a queued job is cancelled, a running one stops within one work unit, and a
    finished one's results are removed."""
    config, store = state(request)
    found = store.dismiss(_job(request, job_id).id, tenant=tenant(request))
    if found is None:
        raise OgcError(404, "no-such-job", f"no job {job_id}")
    if found.state is JobState.CANCELLED and found.finished_at is not None:
        remove_files(found, config.data_dir)
    return {**status_info(request, found), "status": "dismissed"}


@router.get(
    "/jobs/{job_id}/results", responses=answers(404, 410) | {422: problem_doc("the job failed")}
)
def results(request: Request, job_id: str) -> dict[str, Any]:
    """Links to each output of a successful job (and its counts, inline)."""
    found = _job(request, job_id)
    if found.state is JobState.FAILED:
        raise OgcError(422, "job-failed", f"job {job_id} failed: {found.error}")
    if job_status(found) == "dismissed":  # as its status says, even while it winds down
        raise OgcError(410, "job-dismissed", f"job {job_id} was dismissed; it has no results")
    if found.state is not JobState.SUCCEEDED:
        raise OgcError(404, "result-not-ready", f"job {job_id} is {found.state.value}")
    root = base_url(request)
    data_dir = state(request)[0].data_dir
    item = result_item(data_dir, found)  # read once: the coverage link and the counts
    out: dict[str, Any] = {
        "detections": link(f"{root}/v1/jobs/{job_id}/result", "detections", "application/geo+json"),
        "geopackage": link(
            f"{root}/v1/jobs/{job_id}/result?format=gpkg",
            "geopackage",
            "application/geopackage+sqlite3",
        ),
        "stac": link(f"{root}/v1/jobs/{job_id}/stac", "stac", "application/geo+json"),
    }
    if on_map(item):  # else the collection is a 404
        out["coverage"] = link(f"{root}/collections/{job_id}-coverage/items", "coverage",
                               "application/geo+json")  # fmt: skip
    counts = job_counts(data_dir, found, item)
    if counts is not None:
        out["counts"] = counts
    return out
