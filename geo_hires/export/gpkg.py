"""GeoPackage output in the scene CRS (geopandas + pyogrio)."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import shapely

from geo_hires.config import ExportConfig
from geo_hires.detections import PixelDetections
from geo_hires.georef import to_map
from geo_hires.scene.open import Scene

__all__ = ["write_gpkg"]


def write_gpkg(
    path: str | os.PathLike[str],
    dets: PixelDetections,
    scene: Scene,
    *,
    config: ExportConfig | None = None,
    layer: str = "detections",
) -> None:
    """Write ``dets`` as polygons in the scene's own CRS to a GeoPackage layer.

    Why the scene CRS: analysts measuring areas and distances want the projected CRS the
    imagery came in; GeoJSON is the WGS84 copy.
    """
    config = config or ExportConfig()
    dets = dets.canonical_order()
    geo = to_map(dets, scene)
    polygons = shapely.polygons(geo.polygons) if len(geo) else []
    frame = gpd.GeoDataFrame(
        {
            "class": [dets.class_names[int(c)] for c in dets.classes],
            "score": dets.scores.astype(float),
            "level": [dets.level_names[int(lv)] for lv in dets.levels],
            "model": [config.model_name] * len(dets),
        },
        geometry=gpd.GeoSeries(polygons, crs=scene.crs_wkt),
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    frame.to_file(target, driver="GPKG", layer=layer, engine="pyogrio")
