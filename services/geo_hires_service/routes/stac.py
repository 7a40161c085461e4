"""``/v1/jobs/{id}/stac`` and ``/v1/models/{name}/mlm``: a result's STAC item and a model's.

The runner writes the item beside the job's outputs with file paths; here its hrefs become
the service's URLs (the outputs, the model's MLM item), and the scene, whose server path a
client must never see, is named by its file name only.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from geo_hires.models.card import shipped_models
from geo_hires.models.mlm import mlm_item
from geo_hires_service.access import finished_job, state, tenant
from geo_hires_service.ogc import base_url, on_map
from geo_hires_service.problems import answers, problem_doc
from geo_hires_service.runner import JobFiles

__all__ = ["model_item", "router"]

router = APIRouter(prefix="/v1")
GEOJSON = "application/geo+json"


def model_item(root: str, name: str) -> dict[str, Any]:
    """A shipped model's MLM item with the service's URLs for its files."""
    item = mlm_item(name)
    item["links"] = [{"rel": "self", "href": f"{root}/v1/models/{name}/mlm", "type": GEOJSON}]
    for asset in item["assets"].values():
        asset["href"] = f"{root}/v1/models/{name}#{asset['href'].removeprefix('./')}"
    return item


@router.get("/models/{name}/mlm", response_class=JSONResponse,
            responses={404: problem_doc("no shipped model of that name")})  # fmt: skip
def mlm(request: Request, name: str) -> JSONResponse:
    tenant(request)
    if name not in shipped_models():
        raise HTTPException(404, f"no model {name}; shipped: {', '.join(shipped_models())}")
    return JSONResponse(model_item(base_url(request), name), media_type=GEOJSON)


def _service_hrefs(item: dict[str, Any], root: str, job_id: str) -> None:
    """The item's assets and links as the service serves them. The ``source`` link goes: the
    scene is a file on the server (or an upload) that no client can fetch, and its bare name,
    resolved against the item's URL, led clients to a 404 (the title still names it)."""
    urls = {
        "labels": f"{root}/v1/jobs/{job_id}/result",
        "gpkg": f"{root}/v1/jobs/{job_id}/result?format=gpkg",
        "coverage": f"{root}/collections/{job_id}-coverage/items?limit=10000",
        "overview": f"{root}/v1/jobs/{job_id}/quicklook",
    }
    if not on_map(item):  # its coverage is pixels: no collection serves it (the GeoPackage does)
        del urls["coverage"]
    item["assets"] = {k: {**a, "href": urls[k]} for k, a in item["assets"].items() if k in urls}
    model = item["properties"]["geo_hires:provenance"].get("model") or item["id"]
    links = [{"rel": "self", "href": f"{root}/v1/jobs/{job_id}/stac", "type": GEOJSON}]
    for ln in item["links"]:
        if ln["rel"] == "derived_from":
            name = ln["title"].removeprefix("model ").removesuffix(" (MLM)") or model
            links.append({**ln, "href": f"{root}/v1/models/{name}/mlm"})
    item["links"] = links


@router.get("/jobs/{job_id}/stac", response_class=JSONResponse,
            responses=answers(404, 409, 410))  # fmt: skip
def job_item(request: Request, job_id: str) -> JSONResponse:
    """The STAC item of a succeeded job (label extension; 409 while it may still succeed, 410
    once it failed or was cancelled)."""
    job = finished_job(request, job_id)
    path = JobFiles.of(state(request)[0].data_dir, job).stac
    if not path.is_file():
        raise HTTPException(404, f"job {job_id} ran before STAC items were written")
    item = json.loads(path.read_text(encoding="utf-8"))
    item["id"] = job.id
    _service_hrefs(item, base_url(request), job.id)
    return JSONResponse(item, media_type=GEOJSON)
