"""Counts of detections per class, and per polygon of a multi-polygon AOI and class.

Analysts count aircraft per apron and vehicles per parking area. The counts go where each
reader looks: a ``counts`` layer of the GeoPackage (one row per polygon and class, with the
polygon, in the scene CRS), the STAC item's ``label:overviews`` and a service job's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geo_hires.aoi import AreaOfInterest, PartCount
from geo_hires.detections import PixelDetections
from geo_hires.georef import geometry_to_map
from geo_hires.scene import Scene

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["class_counts", "counts_frame", "counts_json", "part_counts"]


def class_counts(dets: PixelDetections) -> dict[str, int]:
    """Detections per class, every class of the model (zeros kept), in the model's order."""
    return {name: int((dets.classes == i).sum()) for i, name in enumerate(dets.class_names)}


def part_counts(area: AreaOfInterest | None, dets: PixelDetections) -> tuple[PartCount, ...]:
    """Counts per polygon and class when the AOI has several polygons, else none (one polygon's
    counts are the totals)."""
    if area is None or len(area.parts) < 2:
        return ()
    return area.counts(dets)


def counts_frame(
    counts: Sequence[PartCount], area: AreaOfInterest, scene: Scene
) -> gpd.GeoDataFrame:
    """The ``counts`` layer: one row per polygon and class, the polygon in the scene CRS."""
    import geopandas as gpd

    rows = [
        {
            "aoi": c.part + 1,
            "name": c.name,
            "class": c.class_name,
            "count": c.count,
            "geometry": geometry_to_map(area.parts[c.part][1], scene),
        }
        for c in counts
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=scene.crs_wkt)


def counts_json(dets: PixelDetections, counts: Sequence[PartCount]) -> dict[str, Any]:
    """``{"by_class": {...}, "by_polygon": [{"aoi", "name", "counts": {...}}]}``."""
    polygons: dict[int, dict[str, Any]] = {}
    for c in counts:
        entry = polygons.setdefault(c.part, {"aoi": c.part + 1, "name": c.name, "counts": {}})
        entry["counts"][c.class_name] = c.count
    return {"by_class": class_counts(dets), "by_polygon": list(polygons.values())}
