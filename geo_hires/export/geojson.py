"""RFC 7946 GeoJSON output: WGS84 lon/lat, closed counter-clockwise rings, stable bytes.

The same detections and metadata always give the same bytes: features are written in canonical
order, coordinates rounded to a fixed number of decimals, keys in a fixed order, and nothing that
varies between runs (timings, hostnames) is written.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from geo_hires.config import ExportConfig
from geo_hires.detections import GeoDetections, PixelDetections
from geo_hires.georef import split_antimeridian, to_map, to_wgs84
from geo_hires.scene.open import Scene

__all__ = [
    "crs_label",
    "dimension_properties",
    "feature_collection",
    "in_pixel_space",
    "round_floats",
    "sweep_temporaries",
    "write_geojson",
    "write_text_atomic",
]


def crs_label(wkt: str | None) -> str | None:
    """``"EPSG:n"`` when the CRS has an EPSG code, else its WKT; ``None`` for pixel space."""
    if wkt is None:
        return None
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else wkt


def _ccw_rings(poly: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(N, 4, 2)`` → ``(N, 5, 2)`` closed rings, reversed where they run clockwise."""
    x, y = poly[..., 0], poly[..., 1]
    area2 = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    rings = np.where((area2 < 0)[:, None, None], poly[:, ::-1], poly)
    return np.concatenate([rings, rings[:, :1]], axis=1)


def dimension_properties(row: npt.NDArray[np.float64]) -> dict[str, float]:
    """An oriented box's heading (0.1 degree), length and width (centimetres)."""
    return {
        "heading_deg": round(float(row[0]), 1),
        "length_m": round(float(row[1]), 2),
        "width_m": round(float(row[2]), 2),
    }


def feature_collection(
    geo: GeoDetections, *, metadata: Mapping[str, Any], config: ExportConfig
) -> dict[str, Any]:
    """Build the FeatureCollection dict (already in WGS84 or pixel space)."""
    rings = np.round(_ccw_rings(geo.polygons), config.decimals)
    features = []
    for i in range(len(geo)):
        coords = [[float(x), float(y)] for x, y in rings[i]]
        props: dict[str, Any] = {
            "class": geo.class_names[int(geo.classes[i])],
            "score": round(float(geo.scores[i]), 4),
            "level": geo.level_names[int(geo.levels[i])],
            "model": config.model_name,
        }
        if geo.dimensions is not None:
            props.update(dimension_properties(geo.dimensions[i]))
        geometry: dict[str, Any] = {"type": "Polygon", "coordinates": [coords]}
        if geo.crs is not None and np.ptp(rings[i, :, 0]) > 180:  # across the antimeridian
            split = split_antimeridian(shapely.Polygon(coords))
            geometry = round_floats(json.loads(shapely.to_geojson(split)), config.decimals)
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    return {"type": "FeatureCollection", "geo_hires": dict(metadata), "features": features}


def round_floats(value: Any, decimals: int) -> Any:
    """``value`` with every float in it (in nested lists, tuples and dicts) rounded to
    ``decimals``; tuples become lists, as JSON has them."""
    if isinstance(value, float):
        return round(value, decimals)
    if isinstance(value, list | tuple):
        return [round_floats(v, decimals) for v in value]
    if isinstance(value, dict):
        return {k: round_floats(v, decimals) for k, v in value.items()}
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    Why: a reader (or a crash) never sees a half-written output file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is not None or exc.errno is None:
            raise
        # a full disk names no file ("[Errno 28] No space left on device"): name the output
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`write_text_atomic` left for ``path`` when its
    process was killed mid-write (each a whole output's size, hidden); return them. Only for a
    caller that knows nobody else writes ``path`` now (``batch`` holds the scene's lock)."""
    target = Path(path)
    mine = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")  # mkstemp's names
    gone = [p for p in target.parent.glob(f".{glob.escape(target.name)}.*.tmp")
            if mine.fullmatch(p.name)]  # fmt: skip
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def write_geojson(
    path: str | os.PathLike[str],
    dets: PixelDetections,
    scene: Scene,
    *,
    config: ExportConfig | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Georeference ``dets`` in ``scene`` and write RFC 7946 GeoJSON to ``path``.

    Args:
        path: Output file (written atomically).
        dets: Detections in level-0 scene pixels.
        scene: Their scene (affine and CRS).
        config: Decimals and model name.
        extra: More collection metadata (for example ``config_id``).

    Returns:
        The collection's metadata as written.
    """
    config = config or ExportConfig()
    dets = dets.canonical_order()
    geo = to_wgs84(to_map(dets, scene))
    counts = {name: int((dets.classes == i).sum()) for i, name in enumerate(dets.class_names)}
    metadata: dict[str, Any] = {
        "scene": Path(scene.path).name,
        "scene_size": [scene.width, scene.height],
        "scene_crs": crs_label(scene.crs_wkt),
        "pixel_space": scene.crs_wkt is None,
        "model": config.model_name,
        "count": len(dets),
        "counts": counts,
        **(extra or {}),
    }
    fc = feature_collection(geo, metadata=metadata, config=config)
    write_text_atomic(path, json.dumps(fc, separators=(",", ":"), ensure_ascii=False) + "\n")
    return metadata


def in_pixel_space(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a GeoJSON ``detect`` wrote for a scene without a CRS (its
    coordinates are pixels, whatever GDAL, which calls every GeoJSON WGS84, says); ``False``
    for any other file, or one that is not readable JSON."""
    if Path(path).suffix.lower() not in (".geojson", ".json"):
        return False
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return bool(isinstance(doc, dict) and (doc.get("geo_hires") or {}).get("pixel_space"))
