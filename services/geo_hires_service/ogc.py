"""What the OGC APIs share: conformance classes, links, exceptions, a job as ``statusInfo``.

The service speaks OGC API – Processes (Part 1: Core) and OGC API – Features (Part 1: Core)
beside ``/v1``, over the same store, tenants and limits, so that OWSLib, GDAL's OAPIF driver
and QGIS talk to it without an adapter. A job submitted on either side is visible on both.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from geo_hires_service.problems import PROBLEM, problem_doc
from geo_hires_service.runner import JobFiles
from geo_hires_service.store import Job, JobState

__all__ = [
    "BAD_QUERY",
    "CONFORMANCE",
    "OgcError",
    "add_ogc_handlers",
    "base_url",
    "job_counts",
    "known_query",
    "link",
    "on_map",
    "path_prefix",
    "result_item",
    "status_info",
]

_PROC = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
_FEAT = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
CONFORMANCE = [
    *(_PROC + c for c in ("core", "ogc-process-description", "json", "job-list", "dismiss")),
    *(_FEAT + c for c in ("core", "geojson")),
]
"""No ``oas30``: the API definition FastAPI serves is OpenAPI 3.1, which those classes do not
cover (claiming them sent validators looking for a 3.0 document)."""
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
PROCESS_ID = "detect"
_STATUS = {
    JobState.QUEUED: "accepted",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "successful",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "dismissed",
}


class OgcError(Exception):
    """An OGC exception (``type`` one of the standard's URIs), answered as a problem."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


async def _ogc_error(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OgcError)
    body = {"type": EXCEPTIONS + exc.kind, "title": exc.kind.replace("-", " "),
            "status": exc.status, "detail": exc.detail}  # fmt: skip
    return JSONResponse(body, exc.status, media_type=PROBLEM)


def add_ogc_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OgcError, _ogc_error)


def base_url(request: Request) -> str:
    """The service's root URL as the client reached it (links are absolute)."""
    return str(request.base_url).rstrip("/")


def path_prefix(request: Request) -> str:
    """The path the service is mounted under (``--root-path``, a Serve route prefix): the
    ``/v1`` paths a client follows must carry it, as :func:`base_url`'s links do."""
    return str(request.scope.get("root_path", "")).rstrip("/")


Responses = dict[int | str, dict[str, Any]]
BAD_QUERY: Responses = {400: problem_doc("a query parameter is invalid, or not one it takes")}
"""What :func:`known_query` answers, for a route's ``responses``."""


def known_query(request: Request, known: frozenset[str], note: str = "") -> None:
    """OGC API: a query parameter the API does not define is a 400, not ignored (a client asking
    ``crs=EPSG:3857`` must not get CRS84 coordinates without being told); ``f`` is ``json``."""
    unknown = sorted(set(request.query_params) - known)
    fmt = request.query_params.get("f", "json")
    if fmt not in ("json", "geojson"):
        raise HTTPException(400, f"f={fmt!r}: this endpoint answers in JSON only (f=json)")
    if unknown:
        raise HTTPException(
            400, f"unknown query parameter {unknown[0]!r}; this endpoint takes "
            f"{', '.join(sorted(known))}" + (f" ({note})" if note else ""),
        )  # fmt: skip


def link(href: str, rel: str, type_: str = "application/json", title: str = "") -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    return out | ({"title": title} if title else {})


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _progress(job: Job) -> int:
    if job.state is JobState.SUCCEEDED:
        return 100
    if job.units_total <= 0:
        return 0
    return min(99, int(100 * job.units_done / job.units_total))


def job_status(job: Job) -> str:
    """The OGC status of a job; a running job asked to stop is already ``dismissed``."""
    if job.state is JobState.RUNNING and job.cancel_requested:
        return "dismissed"
    return _STATUS[job.state]


def result_item(data_dir: Any, job: Job) -> dict[str, Any] | None:
    """The STAC item of a succeeded job (``None`` before it succeeded, or for a job that ran
    before items were written)."""
    if job.state is not JobState.SUCCEEDED:
        return None
    path = JobFiles.of(data_dir, job).stac
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def on_map(item: dict[str, Any] | None) -> bool:
    """Whether a job's results are OGC feature collections: not when its scene has no CRS
    (its STAC item has no geometry), whose features are pixels that no client may read as
    CRS84 (the collections answer 404, so nothing links to them)."""
    return item is None or item.get("geometry") is not None


def job_counts(
    data_dir: Any, job: Job, item: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Counts per class (and per AOI polygon) of a finished job, from its STAC item (``item``
    when the caller has read it)."""
    item = item or result_item(data_dir, job)
    if item is None:
        return None
    overviews = item["properties"]["label:overviews"]
    by_class = {c["name"]: c["count"] for c in overviews[0]["counts"]}
    by_polygon = [
        {"name": o["geo_hires:aoi"], "counts": {c["name"]: c["count"] for c in o["counts"]}}
        for o in overviews[1:]
    ]
    return {"by_class": by_class, "by_polygon": by_polygon}


def status_info(request: Request, job: Job) -> dict[str, Any]:
    """A job as OGC API – Processes ``statusInfo`` (plus its counts when it succeeded)."""
    root = base_url(request)
    status = job_status(job)
    item = result_item(request.app.state.config.data_dir, job)
    links = [link(f"{root}/jobs/{job.id}", "self", title="job status")]
    if status == "successful":
        links += [
            link(f"{root}/jobs/{job.id}/results", REL + "results", title="results"),
            link(f"{root}/collections/{job.id}", "related", title="detections (OGC API Features)"),
            link(f"{root}/v1/jobs/{job.id}/stac", "describedby", "application/geo+json",
                 "STAC item"),
        ]  # fmt: skip
        links = links if on_map(item) else [ln for ln in links if ln["rel"] != "related"]
    info: dict[str, Any] = {
        "processID": PROCESS_ID,
        "type": "process",
        "jobID": job.id,
        "status": status,
        "message": job.error or f"{job.scene_name}: {status}",
        "created": _iso(job.created_at),
        "started": _iso(job.started_at),
        "finished": _iso(job.finished_at),
        "updated": _iso(job.finished_at or job.started_at or job.created_at),
        "progress": _progress(job),
        "links": links,
    }
    counts = job_counts(request.app.state.config.data_dir, job, item)
    if counts is not None:
        info["counts"] = counts
    return {k: v for k, v in info.items() if v is not None}
