"""The HTTP API (FastAPI): records jobs and answers; never runs a scene in the request path.

Versioned under ``/v1``; every error is RFC 9457 ``application/problem+json`` with a ``detail``
that says what to change. The scene's header is opened (GTiff driver only, pixel budget
enforced) before a job is accepted, so a bad scene is a 4xx now rather than a failed job later.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as Path_
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from geo_hires.aoi import AoiWarning, load_aoi
from geo_hires.config import ReadConfig
from geo_hires.errors import (
    ConfigError,
    SceneReadError,
    SceneTooLargeError,
    UnsupportedBandsError,
)
from geo_hires.models.registry import load_card, shipped_models
from geo_hires.scene.stac import open_input
from services.runner import JobFiles, job_read_config, scene_read_config
from services.security import Rejected, Tokens, is_tiff, resolve_scene_uri
from services.store import Job, JobState, JobStore, QueueFullError
from services.viewer import STATIC, map_page, web_mercator_overlay

__all__ = ["DetectOptions", "ServiceConfig", "UriSubmission", "create_app"]

PROBLEM = "application/problem+json"


_BAND_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
_MAX_AOI_BYTES = 1_000_000


class DetectOptions(BaseModel):
    """The detect options a client may set (anything else is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="aircraft_lsn", description="a shipped model (GET /v1/models)")
    score_threshold: float | None = Field(default=None, gt=0, lt=1, description="minimum score")
    block: int = Field(
        default=1024, ge=64, le=4096, multiple_of=4, description="block core, level px"
    )
    levels: list[str] | None = Field(
        default=None, min_length=1, max_length=16, description="level names of the model (all)"
    )
    bands: (
        list[Annotated[int, Field(ge=1, le=4096)] | Annotated[str, Field(pattern=_BAND_NAME)]]
        | None
    ) = Field(
        default=None,
        min_length=3,
        max_length=3,
        description="scene bands used as red, green, blue: 1-based indexes or band names "
        "(as geo-hires --bands); default: by colour interpretation",
    )
    asset: str | None = Field(
        default=None,
        pattern=_BAND_NAME,
        description="for a STAC item: the asset to scan (as geo-hires --asset)",
    )
    aoi: dict[str, Any] | None = Field(
        default=None,
        description="area of interest, GeoJSON (WGS84) Polygon/MultiPolygon, Feature or "
        "FeatureCollection: only there is scanned (as geo-hires --aoi)",
    )
    zoom: Literal["all", "gate", "rl", "random", "none"] = Field(
        default="all", description="which fine windows get the full-resolution pass (--zoom)"
    )
    budget: float | None = Field(
        default=None, gt=0, le=1, description="at most this share of fine windows (--budget)"
    )

    @field_validator("aoi")
    @classmethod
    def _small_geojson(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and len(json.dumps(v)) > _MAX_AOI_BYTES:
            raise ValueError(f"the AOI is over {_MAX_AOI_BYTES:,} bytes of GeoJSON; simplify it")
        return v

    @field_validator("model")
    @classmethod
    def _shipped(cls, v: str) -> str:
        if v not in shipped_models():
            raise ValueError(f"unknown model {v!r}; choose one of {shipped_models()}")
        return v

    @model_validator(mode="after")
    def _policy_for_rl(self) -> DetectOptions:
        if self.zoom == "rl" and not load_card(self.model).extra.get("zoom_policy"):
            raise ValueError(f"model {self.model!r} has no zoom policy; use zoom 'gate'")
        return self

    @model_validator(mode="after")
    def _known_levels(self) -> DetectOptions:
        if self.levels is not None:
            names = [lv.name for lv in load_card(self.model).levels]
            unknown = [n for n in self.levels if n not in names]
            if unknown:
                raise ValueError(
                    f"model {self.model!r} has no level {unknown[0]!r}; its levels: {names}"
                )
        return self


class UriSubmission(BaseModel):
    """``POST /v1/jobs`` as JSON: a scene already under an allow-listed root."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(..., max_length=4096, description="absolute path under an allowed root")
    options: DetectOptions = Field(default_factory=DetectOptions)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Service settings (``geo-hires serve`` flags)."""

    data_dir: Path
    tokens: Tokens
    allow_roots: tuple[Path, ...] = ()
    max_upload_bytes: int = 4 * 1024**3
    max_scene_pixels: int = 50_000_000_000
    max_active: int = 200
    max_active_per_tenant: int = 50

    @property
    def read_config(self) -> ReadConfig:
        return scene_read_config(self.max_scene_pixels)


def _iso(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t is not None else None


def job_json(job: Job) -> dict[str, Any]:
    """The public view of a job (never its tenant or server paths)."""
    return {
        "id": job.id,
        "state": job.state.value,
        "scene": job.scene_name,
        "options": job.options,
        "progress": {"units_done": job.units_done, "units_total": job.units_total},
        "detections": job.detections,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "links": {
            "self": f"/v1/jobs/{job.id}",
            "result": f"/v1/jobs/{job.id}/result",
            "map": f"/v1/jobs/{job.id}/map",
        },
    }


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    return JSONResponse({**body, "detail": detail}, status, headers=headers, media_type=PROBLEM)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(filename: str | None) -> str:
    """An upload's file name reduced to a safe base name (it becomes the output's provenance)."""
    name = _SAFE.sub("_", Path(filename or "").name).lstrip(".")[:200]
    return name or "scene.tif"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copy an upload into ``folder`` with a byte limit; fsynced (file and folder) on return."""
    folder.mkdir(parents=True)
    try:
        return await _copy(upload, folder / safe_name(upload.filename), limit)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


async def _copy(upload: UploadFile, path: Path, limit: int) -> Path:
    size = 0
    with path.open("wb") as fh:
        while chunk := await upload.read(1 << 20):
            if size == 0 and not is_tiff(chunk[:4]):
                raise Rejected("only GeoTIFF scenes are accepted", status=415)
            size += len(chunk)
            if size > limit:
                raise Rejected(f"the upload exceeds the limit of {limit:,} bytes", status=413)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if size == 0:
        raise Rejected("the scene upload is empty")
    _fsync_dir(path.parent)
    return path


def check_header(path: Path, config: ServiceConfig, options: DetectOptions) -> None:
    """Open the scene's header now (with the job's bands), so a bad scene or band choice is
    refused before ``202``."""
    try:
        scene, _ = open_input(path, job_read_config(config.read_config, options.model_dump()))
        if options.aoi is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AoiWarning)  # a miss is an empty result
                load_aoi(options.aoi, scene)
    except (SceneTooLargeError, SceneReadError, UnsupportedBandsError, ConfigError) as exc:
        detail = str(exc).replace(str(path), path.name)  # no server paths in answers
        if isinstance(exc, SceneTooLargeError):
            raise Rejected(detail, status=413) from exc
        raise Rejected(f"the scene cannot be used: {detail}") from exc


def _state(request: Request) -> tuple[ServiceConfig, JobStore]:
    return request.app.state.config, request.app.state.store


def _tenant(request: Request) -> str:
    tenant = request.app.state.config.tokens.tenant(request.headers.get("authorization"))
    if tenant is None:
        raise HTTPException(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
    return str(tenant)


def _own_job(request: Request, job_id: str) -> Job:
    job = request.app.state.store.get(job_id, tenant=_tenant(request))
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _finished(request: Request, job_id: str) -> Job:
    job = _own_job(request, job_id)
    if job.state is not JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job_id} is {job.state.value}; no result yet")
    return job


def _overlay(request: Request, job_id: str) -> tuple[Path, list[list[float]] | None]:
    """The job's quicklook warped for the map, made once and kept beside its outputs."""
    job = _finished(request, job_id)
    config = _state(request)[0]
    files = JobFiles.of(config.data_dir, job)
    png, meta = files.quicklook.with_suffix(".map.png"), files.quicklook.with_suffix(".map.json")
    if not meta.is_file():  # two first requests may both make it: each replace is atomic
        scene, _ = open_input(job.scene_path, job_read_config(config.read_config, job.options))
        tmp = png.with_name(f".{uuid.uuid4().hex}.png")
        bounds = web_mercator_overlay(files.quicklook, scene, tmp)
        if bounds is None:
            shutil.copy(files.quicklook, tmp)
        os.replace(tmp, png)
        tmp_meta = meta.with_name(f".{uuid.uuid4().hex}.json")
        tmp_meta.write_text(json.dumps({"bounds": bounds}))
        os.replace(tmp_meta, meta)
    return png, json.loads(meta.read_text())["bounds"]


def _first_error(errors: Sequence[Any], where_default: str) -> str:
    """``location: message`` of pydantic's first error (what a client should fix first)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(x) for x in first["loc"]) or where_default
    return f"{where}: {first['msg']}"


def _parse_options(text: str | None) -> DetectOptions:
    try:
        return DetectOptions.model_validate_json(text or "{}")
    except ValidationError as exc:
        raise Rejected(f"options: {_first_error(exc.errors(), 'options')}", status=422) from exc


async def _from_upload(request: Request, config: ServiceConfig) -> tuple[Path, str, DetectOptions]:
    length = request.headers.get("content-length")
    if length is None:
        raise Rejected("uploads need a Content-Length header", status=411)
    if not length.isdigit() or int(length) > config.max_upload_bytes + 1024 * 1024:
        raise Rejected(
            f"the upload exceeds the limit of {config.max_upload_bytes:,} bytes", status=413
        )
    async with request.form(max_files=1, max_fields=4) as form:
        scene = form.get("scene")
        if not isinstance(scene, UploadFile):
            raise Rejected("multipart field 'scene' (the GeoTIFF file) is missing")
        opts = form.get("options")
        options = _parse_options(opts if isinstance(opts, str) else None)
        folder = config.data_dir / "uploads" / uuid.uuid4().hex
        path = await save_upload(scene, folder, config.max_upload_bytes)
    return path, path.name, options


async def _from_uri(request: Request, config: ServiceConfig) -> tuple[Path, str, DetectOptions]:
    try:
        body = UriSubmission.model_validate_json(await request.body())
    except ValidationError as exc:
        raise Rejected(_first_error(exc.errors(), "body"), status=422) from exc
    path = resolve_scene_uri(body.uri, config.allow_roots)
    return path, path.name, body.options


def create_app(config: ServiceConfig | None = None, store: JobStore | None = None) -> FastAPI:
    """The FastAPI application (the Serve ingress wraps it; tests run it under uvicorn too).

    Routes read the config and the store from ``app.state``, so the Serve ingress can build the
    app where the application is defined and attach them in its replica (an engine does not
    travel between processes).
    """
    app = FastAPI(
        title="geo_hires",
        version="1",
        description="Find objects in large georeferenced rasters; submit scenes as jobs.",
    )
    app.state.config, app.state.store = config, store

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, _first_error(exc.errors(), ""))

    @app.exception_handler(Rejected)
    async def _rejected(_r: Request, exc: Rejected) -> JSONResponse:
        return problem(exc.status, str(exc))

    @app.exception_handler(QueueFullError)
    async def _full(_r: Request, exc: QueueFullError) -> JSONResponse:
        return problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    app.mount("/v1/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        _tenant(request)
        return {"models": [{"name": n, "card": load_card(n).as_json()} for n in shipped_models()]}

    @app.post("/v1/jobs", status_code=202, openapi_extra={"requestBody": _submit_body()})
    async def submit(
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        tenant = _tenant(request)
        config, store = _state(request)
        if idempotency_key is not None:
            found = store.submit_lookup(tenant, idempotency_key)
            if found is not None:
                return _accepted(found)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            path, name, options = await _from_upload(request, config)
        elif kind == "application/json":
            path, name, options = await _from_uri(request, config)
        else:
            raise Rejected("send multipart/form-data (field 'scene') or JSON {uri}", status=415)
        try:
            check_header(path, config, options)
            job, created = store.submit(
                tenant=tenant,
                scene_path=str(path),
                scene_name=name,
                options=options.model_dump(),
                idempotency_key=idempotency_key,
                max_active=config.max_active,
                max_active_per_tenant=config.max_active_per_tenant,
            )
        except BaseException:
            _drop_upload(path, config)
            raise
        if not created:  # the same key raced in: the first request's job stands
            _drop_upload(path, config)
        return _accepted(job)

    @app.get("/v1/jobs")
    def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        jobs = _state(request)[1].list_jobs(_tenant(request), limit=limit, offset=offset)
        return {"jobs": [job_json(j) for j in jobs], "limit": limit, "offset": offset}

    @app.get("/v1/jobs/{job_id}")
    def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return job_json(_own_job(request, job_id))

    @app.get("/v1/jobs/{job_id}/result", response_model=None)
    def result(
        request: Request,
        job_id: str,
        format: Annotated[str, Query(pattern="^(geojson|gpkg)$")] = "geojson",
    ) -> Response:
        job = _finished(request, job_id)
        files = JobFiles.of(_state(request)[0].data_dir, job)
        if format == "gpkg":
            return FileResponse(
                files.gpkg, media_type="application/geopackage+sqlite3", filename=files.gpkg.name
            )
        return FileResponse(files.geojson, media_type="application/geo+json")

    @app.get("/v1/jobs/{job_id}/map", response_class=HTMLResponse)
    def map_view(job_id: Annotated[str, Path_(pattern="^[0-9a-f]{32}$")]) -> HTMLResponse:
        """The map viewer (holds no data; it fetches with the token from its URL fragment)."""
        return HTMLResponse(map_page(job_id))

    @app.get("/v1/jobs/{job_id}/view")
    def view(request: Request, job_id: str) -> dict[str, Any]:
        """Where the quicklook goes on the map: WGS84 bounds (``None`` for pixel space)."""
        return {"bounds": _overlay(request, job_id)[1]}

    @app.get("/v1/jobs/{job_id}/quicklook", response_model=None)
    def quicklook(request: Request, job_id: str) -> Response:
        """The quicklook warped to Web Mercator (the viewer's background)."""
        return FileResponse(_overlay(request, job_id)[0], media_type="image/png")

    @app.delete("/v1/jobs/{job_id}", status_code=202)
    def cancel(request: Request, job_id: str) -> JSONResponse:
        job = _state(request)[1].cancel(job_id, tenant=_tenant(request))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return JSONResponse(job_json(job), 202)

    return app


def _drop_upload(path: Path, config: ServiceConfig) -> None:
    """Remove an upload that did not become a job (URIs are never touched)."""
    uploads = (config.data_dir / "uploads").resolve()
    if path.resolve().parent.parent == uploads:
        shutil.rmtree(path.parent, ignore_errors=True)


def _submit_body() -> dict[str, Any]:
    """``POST /v1/jobs`` in the OpenAPI document (the handler parses both kinds itself)."""
    options = DetectOptions.model_json_schema()
    uri = {
        "type": "object",
        "properties": {"uri": {"type": "string", "maxLength": 4096}, "options": options},
        "required": ["uri"],
        "additionalProperties": False,
    }
    upload = {
        "type": "object",
        "properties": {
            "scene": {"type": "string", "format": "binary", "description": "the GeoTIFF"},
            "options": {"type": "string", "description": "DetectOptions as JSON"},
        },
        "required": ["scene"],
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": uri}, "multipart/form-data": {"schema": upload}},
    }


def _accepted(job: Job) -> JSONResponse:
    return JSONResponse(job_json(job), 202, headers={"Location": f"/v1/jobs/{job.id}"})
