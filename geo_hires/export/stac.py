"""A STAC Item for a detection result: how catalogues and their users find and read it.

The item is a *label item* (STAC ``label`` extension): ``label:type`` vector, ``label:tasks``
detection, ``label:methods`` automated, the classes and ``label:overviews`` with the counts per
class (and per polygon of a multi-polygon AOI, each overview naming its polygon in
``geo_hires:aoi``). It follows the ``mlm`` extension's advice for inference results: a
``source`` link to the scene (or the STAC item it came from), a ``derived_from`` link to the
model's MLM item, and ``processing:level`` L4, with the run's provenance as properties. Its
assets are the run's other outputs, by paths relative to the item.

Equal runs write equal bytes: keys in a fixed order, coordinates rounded, and ``datetime`` is
the scene's acquisition time (the source STAC item's, else the TIFF ``DateTime`` tag), or,
unknown, ``null`` with the open range STAC allows for it — never the time of writing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geo_hires.aoi import PartCount
from geo_hires.detections import PixelDetections
from geo_hires.export.counts import class_counts
from geo_hires.export.geojson import round_floats, write_text_atomic
from geo_hires.export.remote import read_text
from geo_hires.export.vector import output_kind
from geo_hires.georef import geometry_to_map, lonlat_bounds, split_antimeridian, wrap_longitudes
from geo_hires.scene import Scene, gdal_env, remote

__all__ = [
    "EXTENSIONS",
    "MEDIA_TYPES",
    "ResultItem",
    "footprint",
    "item_outputs",
    "result_item",
    "write_result_item",
]

EXTENSIONS = {
    "label": "https://stac-extensions.github.io/label/v1.0.1/schema.json",
    "mlm": "https://stac-extensions.github.io/mlm/v1.5.2/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
MEDIA_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".parquet": "application/vnd.apache.parquet",
    ".fgb": "application/vnd.flatgeobuf",
    ".png": "image/png",
}
UNKNOWN_TIME = ("1900-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
_DECIMALS = 7


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResultItem:
    """What a result item says (see module docstring).

    Attributes:
        scene: The scene detected in.
        source: The input as given (a raster, or the STAC item it was resolved from).
        dets: The detections written.
        model: The model's name; ``model_item``: its MLM item file, if there is one.
        files: The other outputs (detections in any format); ``coverage``, ``quicklook``.
        provenance: The run's provenance (what GeoJSON carries in ``geo_hires``).
        part_counts: Counts per polygon and class of a multi-polygon AOI.
    """

    scene: Scene
    source: str | os.PathLike[str]
    dets: PixelDetections
    model: str
    model_item: Path | None = None
    files: tuple[Path, ...] = ()
    coverage: Path | None = None
    quicklook: Path | None = None
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    part_counts: tuple[PartCount, ...] = ()


def _round(value: Any) -> Any:
    return round_floats(value, _DECIMALS)


def footprint(scene: Scene) -> dict[str, Any] | None:
    """The scene's outline in WGS84 (GeoJSON); ``None`` without a CRS."""
    if scene.crs_wkt is None:
        return None
    in_crs = geometry_to_map(shapely.box(0, 0, scene.width, scene.height), scene)
    to_wgs84 = Transformer.from_crs(CRS.from_wkt(scene.crs_wkt), "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(in_crs, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    west, south, east, north = lonlat.bounds
    if east - west >= 360:  # a global raster (0–360°, say): wrapped, its edges would coincide
        geom = shapely.box(-180, south, 180, north)
    else:
        geom = split_antimeridian(shapely.transform(lonlat, wrap_longitudes))
    geom = shapely.orient_polygons(shapely.normalize(geom))  # RFC 7946: CCW
    return dict(_round(json.loads(shapely.to_geojson(geom))))


def _datetime(ref: ResultItem) -> dict[str, Any]:
    """``datetime`` (or the open range) of the acquisition: see module docstring."""
    from geo_hires.scene.stac import is_stac_item

    if is_stac_item(ref.source):
        props = json.loads(read_text(ref.source)).get("properties", {})
        keys = ("datetime", "start_datetime", "end_datetime")
        found = {k: props[k] for k in keys if props.get(k) is not None}
        if found.get("datetime") or {"start_datetime", "end_datetime"} <= set(found):
            return {"datetime": found.pop("datetime", None), **found}
    import rasterio

    path = ref.scene.gdal_path  # a signed URL's query included, read as every read is
    with gdal_env(path, alone=True), rasterio.open(path) as src:  # a tag of the file itself
        stamp = src.tags().get("TIFFTAG_DATETIME", "")
    try:
        when = dt.datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return {
            "datetime": None,
            "start_datetime": UNKNOWN_TIME[0],
            "end_datetime": UNKNOWN_TIME[1],
        }
    return {"datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _href(path: str | os.PathLike[str], folder: Path) -> str:
    """Relative to the item where the file lies beside or below it (the files travel
    together), else the absolute path (a shipped model's item, a scene elsewhere) or the URL
    without its query string (a scene in a bucket)."""
    if remote.is_remote(path):
        return remote.public(path)
    target, base = Path(path).resolve(), folder.resolve()
    return target.relative_to(base).as_posix() if target.is_relative_to(base) else target.as_posix()


def _assets(ref: ResultItem, folder: Path) -> dict[str, Any]:
    assets: dict[str, Any] = {}
    for path in ref.files:
        kind = output_kind(path)
        key = "labels" if kind in (".geojson", ".json") else kind.lstrip(".")
        roles = ["labels", "data"] if key == "labels" else ["data"]
        if key in assets:  # a second file of one format (-o a.gpkg -o b.gpkg): listed too
            key = next(
                f"{key}_{n}" for n in range(2, len(ref.files) + 2) if f"{key}_{n}" not in assets
            )
            roles = ["data"]
        assets[key] = {"href": _href(path, folder), "type": MEDIA_TYPES[kind],
                       "title": f"detections ({kind.lstrip('.')})", "roles": roles}  # fmt: skip
    if ref.coverage is not None:
        kind = output_kind(ref.coverage)
        assets["coverage"] = {"href": _href(ref.coverage, folder), "type": MEDIA_TYPES[kind],
                              "title": "area scanned", "roles": ["metadata"]}  # fmt: skip
    if ref.quicklook is not None:
        assets["overview"] = {"href": _href(ref.quicklook, folder), "type": "image/png",
                              "title": "quicklook", "roles": ["overview", "visual"]}  # fmt: skip
    return assets


def _overviews(ref: ResultItem) -> list[dict[str, Any]]:
    def counts(pairs: Mapping[str, int]) -> list[dict[str, Any]]:
        return [{"name": k, "count": v} for k, v in pairs.items()]

    overviews = [{"property_key": "class", "counts": counts(class_counts(ref.dets))}]
    by_part: dict[int, dict[str, Any]] = {}
    for c in ref.part_counts:
        entry = by_part.setdefault(
            c.part, {"property_key": "class", "geo_hires:aoi": c.name, "counts": []}
        )
        entry["counts"].append({"name": c.class_name, "count": c.count})
    return overviews + list(by_part.values())


def _links(ref: ResultItem, folder: Path) -> list[dict[str, Any]]:
    from geo_hires.scene.stac import is_stac_item

    source_type = "application/geo+json" if is_stac_item(ref.source) else "image/tiff"
    links = [
        {"rel": "source", "href": _href(ref.source, folder), "type": source_type,
         "title": "the scene detected in"}
    ]  # fmt: skip
    if ref.model_item is not None:
        title = f"model {ref.model} (MLM)"
        links.append({"rel": "derived_from", "href": _href(ref.model_item, folder),
                      "type": "application/geo+json", "title": title})  # fmt: skip
    return links


def result_item(ref: ResultItem, item_path: Path) -> dict[str, Any]:
    """The result's STAC item as a dict (hrefs relative to ``item_path``'s folder)."""
    from geo_hires import __version__

    folder = item_path.parent
    geometry = footprint(ref.scene)
    classes = list(ref.dets.class_names)
    properties: dict[str, Any] = {
        **_datetime(ref),
        "title": f"{ref.model} detections in {Path(ref.scene.path).name}",
        "label:type": "vector",
        "label:tasks": ["detection"],
        "label:methods": ["automated"],
        "label:properties": ["class"],
        "label:classes": [{"name": "class", "classes": classes}],
        "label:description": f"objects detected by geo_hires with the model {ref.model}",
        "label:overviews": _overviews(ref),
        "processing:level": "L4",
        "processing:software": {"geo_hires": __version__},
        "geo_hires:provenance": dict(ref.provenance),
    }
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [EXTENSIONS["label"], EXTENSIONS["processing"]],
        "id": item_path.name.removesuffix(".stac.json"),
        "geometry": geometry,
    }
    if geometry is not None:
        item["bbox"] = _round(list(lonlat_bounds(shapely.geometry.shape(geometry))))
    item |= {"properties": properties, "links": _links(ref, folder), "assets": _assets(ref, folder)}
    return item


def write_result_item(path: str | os.PathLike[str], ref: ResultItem) -> dict[str, Any]:
    """Write the result item to ``path`` (atomically); returns it."""
    target = Path(path)
    item = result_item(ref, target)
    write_text_atomic(target, json.dumps(item, indent=1, ensure_ascii=False) + "\n")
    return item


def item_outputs(files: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """``files`` split into STAC items and the outputs they describe."""
    paths = [Path(p) for p in files]
    items = [p for p in paths if output_kind(p) == ".stac.json"]
    return items, [p for p in paths if output_kind(p) != ".stac.json"]
