"""A scene's two halves as an AOI: the two-polygon area the STAC and OGC tests count by."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import rasterio
import shapely


def scene_halves(scene: Path) -> gpd.GeoDataFrame:
    """The west and east halves of ``scene``'s extent, named so, in its CRS."""
    with rasterio.open(scene) as src:
        x0, y0, x1, y1 = src.bounds
        crs = src.crs
    xm = (x0 + x1) / 2
    halves = [shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)]
    return gpd.GeoDataFrame({"name": ["west", "east"]}, crs=crs, geometry=halves)
