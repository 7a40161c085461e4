"""``/v1/jobs/{id}/map``: the map viewer, where its quicklook goes, and the quicklook itself."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from geo_hires.errors import GeoHiresError, StorageError
from geo_hires.scene import Scene
from geo_hires.scene.stac import open_input
from geo_hires_service.access import finished_job, kept_file, state
from geo_hires_service.ogc import path_prefix
from geo_hires_service.problems import answers, problem_doc
from geo_hires_service.records import Job
from geo_hires_service.runner import JobFiles, one_line
from geo_hires_service.schemas import ServiceConfig, job_detect_options
from geo_hires_service.store import JOB_ID
from geo_hires_service.viewer import map_page, web_mercator_overlay

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs")


def _scene(job: Job, config: ServiceConfig) -> Scene:
    """The job's scene, opened again to place its quicklook on the map: one moved, deleted or
    refused since the job ran is an answer that says so, not a server error."""
    reading = job_detect_options(job.options).read_config(config.read_config)
    try:
        return open_input(job.scene_path, reading)[0]
    except StorageError as exc:
        detail = f"the storage refused the service: {one_line(exc, job)}"
        raise HTTPException(502, detail) from None
    except GeoHiresError as exc:
        detail = (f"the job's scene can no longer be read ({one_line(exc, job)}), so its map "
                  "cannot be drawn; its detections are still served")  # fmt: skip
        raise HTTPException(410, detail) from None


def _overlay(request: Request, job_id: str) -> tuple[Path, list[list[float]] | None]:
    """The job's quicklook warped for the map, made once and kept beside its outputs."""
    job = finished_job(request, job_id)
    config = state(request)[0]
    files = JobFiles.of(config.data_dir, job)
    png, meta = files.quicklook.with_suffix(".map.png"), files.quicklook.with_suffix(".map.json")
    try:
        if not meta.is_file():  # two first requests may both make it: each replace is atomic
            kept_file(job, files.quicklook)
            _draw_overlay(files.quicklook, _scene(job, config), png, meta)
        return kept_file(job, png), json.loads(meta.read_text())["bounds"]
    except FileNotFoundError:  # the job was deleted (or swept) while this was drawn
        raise HTTPException(410, f"job {job.id}'s files are no longer kept") from None


def _draw_overlay(quicklook: Path, scene: Any, png: Path, meta: Path) -> None:
    tmp = png.with_name(f".{uuid.uuid4().hex}.png")
    bounds = web_mercator_overlay(quicklook, scene, tmp)
    if bounds is None:
        shutil.copy(quicklook, tmp)
    os.replace(tmp, png)
    tmp_meta = meta.with_name(f".{uuid.uuid4().hex}.json")
    tmp_meta.write_text(json.dumps({"bounds": bounds}))
    os.replace(tmp_meta, meta)


@router.get("/{job_id}/map", response_class=HTMLResponse,
            responses={404: problem_doc("not the form of a job id")})  # fmt: skip
def map_view(request: Request, job_id: str) -> HTMLResponse:
    """The map viewer (holds no data; it fetches with the token from its URL fragment). The
    id goes into the page, so only a job id's form is served (any other is no job: 404)."""
    if not JOB_ID.fullmatch(job_id):
        raise HTTPException(404, f"no job {job_id}")
    return HTMLResponse(map_page(job_id, path_prefix(request)))


@router.get("/{job_id}/view", responses=answers(404, 409, 410))
def view(request: Request, job_id: str) -> dict[str, Any]:
    """Where the quicklook goes on the map: WGS84 bounds (``None`` for pixel space)."""
    return {"bounds": _overlay(request, job_id)[1]}


@router.get("/{job_id}/quicklook", response_model=None, responses=answers(404, 409, 410))
def quicklook(request: Request, job_id: str) -> Response:
    """The quicklook warped to Web Mercator (the viewer's background)."""
    return FileResponse(_overlay(request, job_id)[0], media_type="image/png")
