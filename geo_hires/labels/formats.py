"""Parsers of the label formats remote-sensing data ships in, one per format.

* GeoJSON (``.geojson``/``.json``): Polygon/MultiPolygon features in any CRS (legacy ``crs``
  member, else WGS84). Our own pixel-space output (``geo_hires.pixel_space``) reads as pixels.
  Class from ``class``/``label``/``category``; score from ``score`` (default 1).
* Pixel CSV: header with ``xmin,ymin,xmax,ymax`` and ``label`` (or ``class``), optional
  ``score`` and ``image_path``.
* Airbus aircraft CSV: ``image_id,geometry,class`` with a pixel polygon ``[(x, y), ...]``.
* Pascal VOC XML: ``object/name`` and ``object/bndbox``.
* DOTA txt: ``x1 y1 ... x4 y4 class difficult`` lines (header lines are skipped).
* Any other vector file GDAL reads (GeoPackage, FlatGeobuf, Shapefile) and GeoParquet, as
  ``detect`` writes them: polygons in the file's CRS, class and score as in GeoJSON.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geo_hires.errors import LabelReadError, option
from geo_hires.labels.labelset import LabelSet

__all__ = ["READERS", "read_csv"]

_CLASS_KEYS = ("class", "label", "category", "class_name")


def _member(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """A GeoJSON object member that must be an object (absent or null: empty)."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LabelReadError(f"{path}: {key!r} must be a JSON object, not {type(value).__name__}")
    return value


def _geojson_crs(doc: dict[str, Any], path: Path) -> str | None:
    if _member(doc, "geo_hires", path).get("pixel_space"):
        return None
    name = _member(_member(doc, "crs", path), "properties", path).get("name")
    if not name:
        return "EPSG:4326"
    from pyproj import CRS

    try:
        return CRS.from_user_input(name).to_wkt()
    except Exception as exc:
        raise LabelReadError(f"unknown GeoJSON crs {name!r}: {exc}") from exc


def _read_geojson(path: Path) -> LabelSet:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelReadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise LabelReadError(f"{path}: expected a GeoJSON FeatureCollection")
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise LabelReadError(f"{path}: 'features' must be a list")
    rings, names, scores, kinds = [], [], [], []
    for i, feat in enumerate(features):
        if feat is None:  # as some writers leave a deleted feature
            continue
        if not isinstance(feat, dict):
            raise LabelReadError(f"{path}: feature {i} is not a JSON object")
        geom = _member(feat, "geometry", path)
        kinds.append(geom.get("type"))
        ring = _ring(geom, f"{path}: feature {i}")
        if ring is None:
            continue
        props = _member(feat, "properties", path)
        rings.append(ring)
        names.append(_class_of(props))
        scores.append(_score(props.get("score"), path, i))
    _check_polygons(path, rings, kinds)
    crs = _geojson_crs(doc, path)
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=tuple(scores), crs=crs)


def _check_polygons(path: Path, rings: list[np.ndarray], kinds: list[object]) -> None:
    """Features but no polygon: the file holds other objects (points), not boxes."""
    other = sorted({str(k) for k in kinds if k not in (None, "Polygon", "MultiPolygon")})
    if other and not rings:
        raise LabelReadError(
            f"{path}: {len(kinds)} features and no polygon ({', '.join(other)}); labels are "
            "boxes: give polygons (points: buffer them by the objects' size in a GIS)"
        )


def _class_of(props: dict[str, Any]) -> str:
    """The class property's name: a numeric id as an integer (``1.0`` is ``1``), NaN or empty
    as none (``object``)."""
    for key in _CLASS_KEYS:
        value = props.get(key)
        if isinstance(value, float) and math.isnan(value):
            continue
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if value is not None and value != "":  # 0 is a name (a numeric class id)
            return str(value)
    return "object"


def _ring(geom: dict[str, Any], where: str) -> npt.NDArray[np.float64] | None:
    """The outer ring(s) of a polygon; ``None`` for a geometry without one (a point, a null or
    empty geometry, as GIS programs write them)."""
    kind, coords = geom.get("type"), geom.get("coordinates") or []
    if kind not in ("Polygon", "MultiPolygon"):
        return None
    try:
        parts = [coords[0]] if kind == "Polygon" else [p[0] for p in coords]  # IndexError: []
        return np.concatenate([_vertices(p) for p in parts])
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        if not coords:  # an empty polygon: no object
            return None
        raise LabelReadError(f"{where} has unreadable coordinates ({exc})") from exc


def _vertices(coords: object) -> npt.NDArray[np.float64]:
    """``(K, 2)`` vertices, K >= 1, from a list of positions (ValueError otherwise)."""
    arr = np.asarray(coords, np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"expected a list of [x, y] positions, got shape {arr.shape}")
    return arr[:, :2]


def _score(value: object, path: Path, index: int) -> float:
    """A feature's ``score``: 1.0 when absent or null (truth, or a GIS export's empty field,
    which pandas reads as NaN)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return 1.0
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LabelReadError(
            f"{path}: feature {index} has score {value!r}; give a number or leave it empty"
        ) from None


def _box_ring(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def read_csv(path: Path, image: str | None) -> LabelSet:
    """A pixel-box CSV or an Airbus geometry CSV, the rows of ``image`` where it names one."""
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's BOM
        rows = list(csv.DictReader(fh))
    short = next((i for i, r in enumerate(rows) if None in r.values()), None)
    if short is not None:
        raise LabelReadError(
            f"{path}: row {short + 2} has fewer fields than the header; fill in every column"
        )
    if not rows:
        return LabelSet(rings=(), names=(), scores=(), crs=None)
    header = set(rows[0])
    if {"geometry", "image_id"} <= header:
        return _airbus_rows(path, rows, image)
    if not {"xmin", "ymin", "xmax", "ymax"} <= header:
        raise LabelReadError(
            f"{path}: CSV needs columns xmin,ymin,xmax,ymax,label or image_id,geometry,class; "
            f"found {sorted(header)}"
        )
    key = next((k for k in ("label", "class", "name") if k in header), None)
    if "image_path" in header:
        rows = _rows_of(path, rows, image, lambda r: Path(r["image_path"]).name)
    try:
        rings = [_box_ring(*(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in rows]
    except ValueError as exc:
        raise LabelReadError(f"{path}: non-numeric box coordinate ({exc})") from exc
    try:
        scores = [float(r.get("score") or 1.0) for r in rows]
    except ValueError as exc:
        raise LabelReadError(f"{path}: non-numeric score ({exc}); give a number or none") from exc
    names = [r[key] if key else "object" for r in rows]
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=tuple(scores), crs=None)


Row = dict[str, str]


def _rows_of(
    path: Path, rows: list[Row], image: str | None, image_of: Callable[[Row], str]
) -> list[Row]:
    """The rows of ``image`` (``image_of`` names each row's): none when it has none (an image
    without objects), never another image's; a file of several images needs ``image``."""
    if image is None:
        count = len({image_of(r) for r in rows})
        if count > 1:
            raise LabelReadError(
                f"{path} holds labels of {count} images; pick one image's labels: "
                + option("--scene IMAGE", api="read_labels(..., image=NAME)")
            )
        return rows
    return [r for r in rows if image_of(r) == image]


def _airbus_rows(path: Path, rows: list[Row], image: str | None) -> LabelSet:
    rows = _rows_of(path, rows, image, lambda r: r["image_id"])
    try:
        rings = [_vertices(ast.literal_eval(r["geometry"])) for r in rows]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise LabelReadError(f"{path}: unreadable geometry ({exc})") from exc
    names = tuple(r.get("class", "object") for r in rows)
    return LabelSet(rings=tuple(rings), names=names, scores=(1.0,) * len(rows), crs=None)


def _read_voc(path: Path) -> LabelSet:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LabelReadError(f"{path}: not valid XML ({exc})") from exc
    rings, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            coords = [float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as exc:
            raise LabelReadError(f"{path}: bad bndbox ({exc})") from exc
        rings.append(_box_ring(*coords))
        names.append(obj.findtext("name", "object"))
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=(1.0,) * len(rings), crs=None)


def _read_dota(path: Path) -> LabelSet:
    rings, names = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        parts = line.split()
        if len(parts) < 9 or ":" in line:
            continue
        try:
            rings.append(np.asarray(parts[:8], np.float64).reshape(4, 2))
        except ValueError as exc:
            raise LabelReadError(f"{path}: bad DOTA line {line!r} ({exc})") from exc
        names.append(parts[8])
    if not rings and any(len(line.split()) == 5 for line in lines):
        raise LabelReadError(
            f"{path}: lines of 5 fields look like YOLO labels (class, centre, size as fractions "
            "of an image); .txt is read as DOTA (x1 y1 ... x4 y4 class difficult): convert them"
        )
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=(1.0,) * len(rings), crs=None)


def read_vector_labels(path: Path) -> LabelSet:
    """Polygons of any vector file GDAL reads (as ``detect`` writes them), in its CRS."""
    import shapely

    from geo_hires.vectorfile import read_vector

    frame = read_vector(path, "the label file")
    rings, names, scores, kinds = [], [], [], []
    for i, (geom, props) in enumerate(zip(frame.geometry, frame.to_dict("records"), strict=True)):
        kinds.append(None if geom is None or geom.is_empty else geom.geom_type)
        if kinds[-1] not in ("Polygon", "MultiPolygon"):
            continue
        parts = [geom] if geom.geom_type == "Polygon" else list(geom.geoms)
        rings.append(np.concatenate([shapely.get_coordinates(p.exterior) for p in parts]))
        names.append(_class_of(props))
        scores.append(_score(props.get("score"), path, i))
    _check_polygons(path, rings, kinds)
    crs = None if frame.crs is None else frame.crs.to_wkt()
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=tuple(scores), crs=crs)


READERS: dict[str, Callable[[Path], LabelSet]] = {
    ".geojson": _read_geojson,
    ".json": _read_geojson,
    ".xml": _read_voc,
    ".txt": _read_dota,
    **{ext: read_vector_labels for ext in (".gpkg", ".fgb", ".shp", ".parquet", ".geoparquet")},
}
"""The parser of each extension but ``.csv`` (:func:`read_csv`, which also picks an image)."""
