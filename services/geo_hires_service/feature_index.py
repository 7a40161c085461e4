"""Where each feature of a result's GeoJSON lies in its text, and its bounds: what an OGC
features page needs to find its features without parsing the whole result.

Parsed GeoJSON takes several times its file's size, so parsed results could be kept only while
small, and a large one (a gigapixel scene's tens of thousands of detections) was parsed again,
with a shapely geometry per feature, for every page a client asked: a QGIS layer loading it a
thousand features at a time spent seconds per page. The index takes 48 bytes a feature and is
kept for results of any size; a page then reads the file (from the page cache) and parses only
its own features. The scan of the top-level object is written here over the standard
library's decoder (``raw_decode``) because it reports where each value ends; no streaming JSON
parser the project depends on does.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.errors

from geo_hires.georef import lonlat_bounds

__all__ = [
    "FeatureIndex",
    "index_text",
    "indexed",
    "read_features",
    "read_geometries",
    "result_index",
]

_DECODE = json.JSONDecoder().raw_decode
_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class FeatureIndex:
    """A result's features: ``spans`` ``(N, 2)`` of their text (character offsets), ``bounds``
    ``(N, 4)`` lon/lat (:func:`~geo_hires.georef.lonlat_bounds`; NaN without a geometry), the
    length of the text they index, and whether ``detect`` wrote them in pixels (a scene
    without a CRS: its top-level ``geo_hires`` says ``pixel_space``)."""

    spans: npt.NDArray[np.int64]
    bounds: npt.NDArray[np.float64]
    length: int
    pixel_space: bool = False


def _skip(text: str, i: int, then: str = "") -> int:
    """The index after the whitespace at ``i`` (and after ``then``, which must come next)."""
    i = _SPACE.match(text, i).end()  # type: ignore[union-attr]  # matches the empty string
    if then:
        if text[i : i + 1] != then:
            raise ValueError(f"expected {then!r} at character {i}")
        i = _SPACE.match(text, i + 1).end()  # type: ignore[union-attr]
    return i


def _feature_spans(text: str) -> tuple[list[tuple[int, int, bool]], bool]:
    """Each member of the top-level ``features`` array: its start, its end and whether it has
    a geometry (its value is let go at once: kept, they took 8.7 times the file's size); and
    whether the top-level ``geo_hires`` member says ``pixel_space``."""
    found: list[tuple[int, int, bool]] = []
    pixel_space = False
    i = _skip(text, 0, "{")
    while text[i : i + 1] != "}":
        key, i = _DECODE(text, i)
        i = _skip(text, i, ":")
        if key != "features":
            value, end = _DECODE(text, i)
            if key == "geo_hires" and isinstance(value, dict):
                pixel_space = bool(value.get("pixel_space"))
            i = _skip(text, end)
        else:
            i = _skip(text, i, "[")
            while text[i : i + 1] != "]":
                value, end = _DECODE(text, i)
                found.append((i, end, isinstance(value, dict) and bool(value.get("geometry"))))
                i = _skip(text, end)
                i = _skip(text, i, ",") if text[i : i + 1] == "," else i
            i = _skip(text, i + 1)
        i = _skip(text, i, ",") if text[i : i + 1] == "," else i
    return found, pixel_space


def _geometries(texts: list[str]) -> npt.NDArray[np.object_]:
    """The features' geometries: GEOS reads them fast, but refuses a whole feature for what
    JSON allows in its properties (``NaN``, a lone surrogate), which made every page a 500;
    then each geometry is read from the parsed feature."""
    try:
        return shapely.from_geojson(texts)
    except shapely.errors.GEOSException:
        shapes = [shapely.geometry.shape(json.loads(t)["geometry"]) for t in texts]
        out = np.empty(len(shapes), object)
        out[:] = shapes
        return out


def index_text(text: str) -> FeatureIndex:
    """The index of a GeoJSON FeatureCollection's text (``ValueError`` when it is not one)."""
    found, pixel_space = _feature_spans(text)
    spans = np.array([(s, e) for s, e, _ in found], np.int64).reshape(-1, 2)
    placed = np.array([has for _, _, has in found], bool)
    bounds = np.full((len(found), 4), np.nan)
    if placed.any():
        geoms = _geometries([text[s:e] for s, e in spans[placed]])
        bounds[placed] = shapely.bounds(geoms)
        for i in np.flatnonzero(placed)[(bounds[placed, 0] == -180) & (bounds[placed, 2] == 180)]:
            bounds[i] = lonlat_bounds(geoms[np.searchsorted(np.flatnonzero(placed), i)])
    return FeatureIndex(spans, bounds, len(text), pixel_space)


@functools.lru_cache(maxsize=16)
def indexed(path: str, _stamp: tuple[int, int]) -> FeatureIndex:
    """:func:`index_text` of ``path``, kept per file version (``_stamp``: its modification
    time and size). Sixteen are kept: a gigapixel scene's million detections index in 48 MB."""
    return index_text(Path(path).read_text(encoding="utf-8"))


_BUILDING: dict[tuple[str, tuple[int, int]], threading.Lock] = {}
_BUILDING_GUARD = threading.Lock()


def result_index(path: str, stamp: tuple[int, int]) -> FeatureIndex:
    """:func:`indexed`, built once however many requests ask for it at once: a client opening
    a large layer sends its first pages together, and each built the same index (seconds and
    the file's size in memory each); the others wait for the first."""
    key = (path, stamp)
    with _BUILDING_GUARD:
        lock = _BUILDING.setdefault(key, threading.Lock())
    try:
        with lock:
            return indexed(path, stamp)
    finally:
        with _BUILDING_GUARD:
            _BUILDING.pop(key, None)


def _read(path: str, stamp: tuple[int, int]) -> tuple[str, FeatureIndex]:
    """The text of ``path`` and its index; should the file have been replaced since it was
    indexed, it is indexed afresh from that same text."""
    text = Path(path).read_text(encoding="utf-8")
    index = result_index(path, stamp)
    return text, index if index.length == len(text) else index_text(text)


def read_features(
    path: str, stamp: tuple[int, int], rows: npt.NDArray[np.intp]
) -> list[dict[str, Any]]:
    """The features at ``rows`` (0-based) of ``path``, each with its 1-based position as
    ``id``."""
    text, index = _read(path, stamp)
    out = []
    for i in rows:
        start, end = index.spans[i]
        f = json.loads(text[start:end])
        out.append({"type": "Feature", "id": int(i) + 1, "geometry": f["geometry"],
                    "properties": f["properties"]})  # fmt: skip
    return out


def read_geometries(
    path: str, stamp: tuple[int, int], rows: npt.NDArray[np.intp]
) -> npt.NDArray[np.object_]:
    """The shapely geometries of the features at ``rows`` (each with one)."""
    text, index = _read(path, stamp)
    return _geometries([text[s:e] for s, e in index.spans[rows]])
