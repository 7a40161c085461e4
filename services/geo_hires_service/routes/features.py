"""OGC API – Features (Part 1: Core) over job results: what QGIS, ArcGIS and GDAL open by URL.

Each succeeded job of the caller is two collections: ``{job}`` (its detections) and
``{job}-coverage`` (where each level looked). Features are served in CRS84 from the job's
GeoJSON (byte-identical to ``geo-hires detect``'s), with ``bbox``, ``limit`` and ``offset``
paging through ``next`` links; a feature's id is its 1-based position in that file (its
canonical order). The tenant's token is required, and another tenant's job is a 404.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import shapely
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from geo_hires_service.access import state, tenant
from geo_hires_service.feature_index import read_features, read_geometries, result_index
from geo_hires_service.ogc import BAD_QUERY, Responses, base_url, known_query, link
from geo_hires_service.problems import problem_doc
from geo_hires_service.runner import JobFiles
from geo_hires_service.store import Job, JobState

__all__ = ["GeoJSONResponse", "box_matches", "router"]

router = APIRouter(prefix="/collections", tags=["OGC API - Features"])
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOJSON = "application/geo+json"
COVERAGE = "-coverage"
MAX_COLLECTIONS = 200
MAX_ITEMS = 10_000
"""The most features one page holds, whatever ``limit`` asks."""
ITEMS_QUERY = frozenset({"limit", "offset", "bbox", "datetime", "f"})
"""The query parameters ``/items`` defines (``f``: the one format there is, GeoJSON)."""


class GeoJSONResponse(JSONResponse):
    """GeoJSON, as such in the API definition too (``/items`` was documented as JSON)."""

    media_type = GEOJSON


NOT_FOUND: Responses = {404: problem_doc("no such collection (or feature) of the caller's")}


IN_PIXELS = (
    "this job's scene has no CRS: its detections are in pixels, not on a map; get them from "
    "/v1/jobs/{id}/result"
)


def _version(path: Path) -> tuple[str, tuple[int, int]]:
    """``path`` and its version (modification time, size); 404 when the layer is missing."""
    if not path.is_file():
        raise HTTPException(404, "this job has no such layer (it ran before layers were kept)")
    st = path.stat()
    return str(path), (st.st_mtime_ns, st.st_size)


def _require_map(path: Path) -> None:
    """404 unless ``path`` holds features on the map: a scene without a CRS gives features in
    pixels, which no client may read as CRS84, so such a job has no collections (its result is
    still served by ``/v1``)."""
    if result_index(*_version(path)).pixel_space:  # the index a page needs next
        raise HTTPException(404, IN_PIXELS)


def _bounds(path: Path) -> npt.NDArray[np.float64]:
    """Each feature's lon/lat bounds (the caller has made sure they are on the map)."""
    return result_index(*_version(path)).bounds


def _job_layer(request: Request, collection_id: str) -> tuple[Job, Path, bool]:
    """The caller's succeeded job a collection id names, its GeoJSON, and whether it is the
    coverage (404 for anything else, another tenant's job included)."""
    coverage = collection_id.endswith(COVERAGE)
    job_id = collection_id.removesuffix(COVERAGE)
    config, store = state(request)
    job = store.get(job_id, tenant=tenant(request))
    if job is None or job.state is not JobState.SUCCEEDED:
        raise HTTPException(404, f"no collection {collection_id}")
    return job, _layer(JobFiles.of(config.data_dir, job), coverage), coverage


def _layer(files: JobFiles, coverage: bool) -> Path:
    """A job's detections or coverage file; both are refused when the detections are in
    pixels (the coverage, written beside them, is in the same pixels)."""
    _require_map(files.geojson)
    return files.coverage if coverage else files.geojson


def _extent(files: JobFiles, coverage: bool) -> list[float]:
    """A collection's extent: the scene footprint's bbox from the job's STAC item (read, not
    the layer: a listing of 200 jobs must not parse 400 result files), else the layer's.
    Refused (404) like the layer itself when the detections are in pixels."""
    if files.stac.is_file():
        item = json.loads(files.stac.read_text(encoding="utf-8"))
        if item.get("geometry") is None:  # no CRS: its features are in pixels (a listing
            raise HTTPException(404, IN_PIXELS)  # must not index each such result to learn it)
        layer = files.coverage if coverage else files.geojson
        if not layer.is_file():
            raise HTTPException(404, "this job has no such layer (it ran before it was kept)")
        if item.get("bbox"):
            return [float(v) for v in item["bbox"]]
    return bounds_extent(_bounds(_layer(files, coverage)))


def bounds_extent(bounds: npt.NDArray[np.float64]) -> list[float]:
    """The box around features' bounds; a feature without a geometry (NaN bounds) counts
    for nothing, and no placed feature at all is the whole world (never a box of nulls)."""
    placed = bounds[~np.isnan(bounds).any(axis=1)]
    if len(placed):
        return [*placed[:, :2].min(axis=0).tolist(), *placed[:, 2:].max(axis=0).tolist()]
    return [-180.0, -90.0, 180.0, 90.0]


def _collection(request: Request, job: Job, coverage: bool) -> dict[str, Any]:
    root = base_url(request)
    cid = job.id + (COVERAGE if coverage else "")
    files = JobFiles.of(state(request)[0].data_dir, job)
    what = "area scanned per level" if coverage else "detections"
    return {
        "id": cid,
        "title": f"{job.scene_name}: {what}",
        "description": f"{what} of job {job.id} ({job.options.get('model')})",
        "itemType": "feature",
        "crs": [CRS84],
        "extent": {
            "spatial": {"bbox": [_extent(files, coverage)], "crs": CRS84},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [
            link(f"{root}/collections/{cid}", "self"),
            link(f"{root}/collections/{cid}/items", "items", GEOJSON, f"{what} (GeoJSON)"),
            link(f"{root}/v1/jobs/{job.id}/stac", "describedby", GEOJSON, "STAC item"),
        ],
    }


@router.get("", responses=BAD_QUERY)
def collections(request: Request) -> dict[str, Any]:
    """The caller's succeeded jobs (the newest :data:`MAX_COLLECTIONS`), two collections each:
    picked by state in the store, so that newer queued or failed jobs crowd none out."""
    known_query(request, frozenset({"f"}))
    store = state(request)[1]
    jobs = store.list_jobs(tenant(request), limit=MAX_COLLECTIONS, state=JobState.SUCCEEDED)
    found = []
    for j in jobs:
        for coverage in (False, True):
            try:
                found.append(_collection(request, j, coverage))
            except HTTPException:  # a job from before coverage layers were kept
                continue
    root = base_url(request)
    return {"collections": found, "links": [link(f"{root}/collections", "self")]}


@router.get("/{collection_id}", responses=NOT_FOUND | BAD_QUERY)
def collection(request: Request, collection_id: str) -> dict[str, Any]:
    known_query(request, frozenset({"f"}))
    job, _, coverage = _job_layer(request, collection_id)
    return _collection(request, job, coverage)


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``minlon,minlat,maxlon,maxlat`` (or with heights: six numbers) in CRS84; only the
    longitudes may run west to east across the antimeridian (``minlon > maxlon``)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (4, 6) or not all(np.isfinite(values)):
        raise HTTPException(400, "bbox: give minlon,minlat,maxlon,maxlat (CRS84)")
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    x0, y0, x1, y1 = values
    if not -90 <= y0 <= y1 <= 90 or not (-180 <= x0 <= 180 and -180 <= x1 <= 180):
        raise HTTPException(
            400, f"bbox {text}: latitudes -90..90 with minlat <= maxlat, longitudes -180..180 "
            "(minlon > maxlon only for a box across the antimeridian)",
        )  # fmt: skip
    return x0, y0, x1, y1


_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d([Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?)?", re.ASCII
)
"""An RFC 3339 date, or date-time (one without an offset is read as UTC): Python's ISO 8601
parser alone also takes ``20200101`` and ``2020-W01``, which OGC's ``datetime`` does not."""


def _instant(text: str) -> dt.datetime | None:
    if text in ("", ".."):
        return None
    try:
        if not _RFC3339.fullmatch(text):
            raise ValueError(text)
        t = dt.datetime.fromisoformat(text.upper())
    except ValueError:
        raise HTTPException(
            400, f"datetime {text!r}: give an RFC 3339 date-time or interval "
            "(2024-05-01T00:00:00Z, or START/END with .. for an open end)",
        ) from None  # fmt: skip
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _check_datetime(text: str | None) -> None:
    """Checked, then met by every feature: detections carry no time of their own (the scene's
    acquisition time is the STAC item's), so any valid instant or interval selects them all."""
    if text is None:
        return
    parts = text.split("/")
    if len(parts) > 2:
        raise HTTPException(400, f"datetime {text!r}: one instant, or START/END")
    ends = [_instant(p) for p in parts]
    if len(parts) == 1 and ends[0] is None:
        raise HTTPException(400, f"datetime {text!r}: an instant cannot be open")
    if len(ends) == 2 and None not in ends and ends[0] > ends[1]:  # type: ignore[operator]
        raise HTTPException(400, f"datetime {text!r}: the interval ends before it starts")


Box = tuple[float, float, float, float]


def box_matches(
    bounds: npt.NDArray[np.float64], bbox: Box
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which features' boxes meet ``bbox``, and which lie wholly inside it (those certainly
    meet it with their geometry too). Either may cross the antimeridian (west > east: a
    feature split there by the export, a bbox a client sends so)."""
    x0, y0, x1, y1 = bbox
    fx0, fy0, fx1, fy1 = bounds.T
    in_y = (fy1 >= y0) & (fy0 <= y1)
    crosses = fx0 > fx1
    if x0 > x1:  # two wrapping boxes both hold ±180
        in_x = crosses | (fx1 >= x0) | (fx0 <= x1)
        within_y = (fy0 >= y0) & (fy1 <= y1)
        inside = ~crosses & within_y & ((fx0 >= x0) | (fx1 <= x1))  # in its east or west part
        return in_x & in_y, inside
    across = (x1 >= fx0) | (x0 <= fx1)  # a feature whose box wraps round
    in_x = np.where(crosses, across, (fx1 >= x0) & (fx0 <= x1))
    inside = ~crosses & (fx0 >= x0) & (fx1 <= x1) & (fy0 >= y0) & (fy1 <= y1)
    return in_x & in_y, inside


def _matching(path: Path, bbox: Box | None) -> npt.NDArray[np.intp]:
    """Indexes of the features whose geometry meets ``bbox`` (OGC: the geometry, not its box:
    a coverage's multipolygon has gaps). Boxes are compared first; only a feature whose box
    meets ``bbox`` without lying inside it has its geometry read."""
    bounds = _bounds(path)
    if bbox is None:
        return np.arange(len(bounds))
    meet, inside = box_matches(bounds, bbox)
    edge = np.flatnonzero(meet & ~inside)
    if len(edge):
        x0, y0, x1, y1 = bbox
        parts = [(x0, x1)] if x0 <= x1 else [(x0, 180.0), (-180.0, x1)]
        geoms = read_geometries(*_version(path), edge)  # a box of no height is no polygon:
        meet[edge] = np.logical_or.reduce(  # each part is tested, never their (empty) union
            [shapely.intersects(geoms, shapely.box(a, y0, b, y1)) for a, b in parts]
        )
    return np.flatnonzero(meet)


@router.get("/{collection_id}/items", response_class=GeoJSONResponse,
            responses=NOT_FOUND | BAD_QUERY)  # fmt: skip
def items(
    request: Request,
    collection_id: str,
    limit: Annotated[int, Query(ge=1)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    bbox: Annotated[str | None, Query(max_length=200)] = None,
    datetime: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """Features of a collection, a page at a time (``next`` links to the following one); a
    ``limit`` over :data:`MAX_ITEMS` gets that many, as OGC API Features says a server may."""
    known_query(request, ITEMS_QUERY, "features are in CRS84 only")
    _check_datetime(datetime)
    limit = min(limit, MAX_ITEMS)
    _, path, _ = _job_layer(request, collection_id)
    matched = _matching(path, _bbox(bbox))
    page = matched[offset : offset + limit]
    url = f"{base_url(request)}/collections/{collection_id}/items"
    query = "".join(
        f"&{name}={urllib.parse.quote(value, safe=',:/')}"
        for name, value in (("bbox", bbox), ("datetime", datetime))
        if value
    )  # the links repeat the query's filters
    links = [link(f"{url}?limit={limit}&offset={offset}{query}", "self", GEOJSON),
             link(f"{base_url(request)}/collections/{collection_id}", "collection")]  # fmt: skip
    if offset + limit < len(matched):
        links.append(link(f"{url}?limit={limit}&offset={offset + limit}{query}", "next", GEOJSON))
    if offset > 0:
        links.append(link(f"{url}?limit={limit}&offset={max(0, offset - limit)}{query}", "prev",
                          GEOJSON))  # fmt: skip
    body = {"type": "FeatureCollection", "features": read_features(*_version(path), page),
            "numberMatched": len(matched), "numberReturned": len(page), "links": links}  # fmt: skip
    return GeoJSONResponse(body)


@router.get("/{collection_id}/items/{feature_id}", response_class=GeoJSONResponse,
            responses=NOT_FOUND | BAD_QUERY)  # fmt: skip
def item(request: Request, collection_id: str, feature_id: str) -> JSONResponse:
    known_query(request, frozenset({"f"}))
    _, path, _ = _job_layer(request, collection_id)
    canonical = feature_id.isascii() and feature_id.isdigit() and feature_id[0] != "0"  # "²", "07"
    number = int(feature_id) if canonical else 0
    if not 1 <= number <= len(_bounds(path)):
        raise HTTPException(404, f"no feature {feature_id} in {collection_id}")
    url = f"{base_url(request)}/collections/{collection_id}"
    (feature,) = read_features(*_version(path), np.array([number - 1]))
    body = {**feature, "links": [
        link(f"{url}/items/{feature_id}", "self", GEOJSON), link(url, "collection")]}  # fmt: skip
    return GeoJSONResponse(body)
