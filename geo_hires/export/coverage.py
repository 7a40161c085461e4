"""Coverage: where each level actually looked, so "nothing found" differs from "not looked at".

Per level, the footprint is the union of the scanned block cores (blocks left out for nodata
or for missing the AOI are not in it), intersected with the AOI and with the scene's valid
data (polygonised from the same decimated mask that decides which blocks are read). Cores
partition the scene and a detection belongs to the core holding its centre, so this is exactly
the area in which a detection could have been reported. Geometry follows the detections' CRS
rules: the scene CRS in binary formats, WGS84 in GeoJSON, pixels when the scene has no CRS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry.base import BaseGeometry

from geo_hires.detect.levels import LevelRun
from geo_hires.errors import ConfigError
from geo_hires.export.vector import FORMATS, write_frame
from geo_hires.georef import geometry_to_map
from geo_hires.scene import Scene

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["coverage_frame", "valid_area", "write_coverage"]


def valid_area(scene: Scene, valid: npt.NDArray[np.bool_] | None) -> BaseGeometry | None:
    """A decimated validity mask (``DetectResult.valid_mask``: the one that decided which
    blocks were read) as polygons in level-0 pixels; ``None``: all of the scene is valid."""
    if valid is None:
        return None
    h, w = valid.shape
    to_level0 = Affine.scale(scene.width / w, scene.height / h)
    shapes = rasterio.features.shapes(
        valid.astype(np.uint8), mask=valid, transform=to_level0, connectivity=8
    )
    return shapely.union_all([shapely.geometry.shape(g) for g, _ in shapes])


def _footprint(run: LevelRun, limit: BaseGeometry) -> BaseGeometry:
    cores = shapely.union_all([shapely.box(*c) for c in run.cores])
    return shapely.intersection(cores, limit) if not cores.is_empty else cores


def coverage_frame(
    levels: Sequence[LevelRun],
    scene: Scene,
    *,
    aoi: BaseGeometry | None = None,
    valid: BaseGeometry | None = None,
) -> gpd.GeoDataFrame:
    """One row per level: its footprint in the scene CRS (pixels without a CRS)."""
    import geopandas as gpd  # here, not at import: plain GeoJSON runs never need pandas

    limit = shapely.box(0, 0, scene.width, scene.height)
    for part in (aoi, valid):
        if part is not None:
            limit = shapely.intersection(limit, part)
    rows = []
    for run in levels:
        px = _footprint(run, limit)
        rows.append(
            {
                "level": run.name,
                "downsample": run.downsample,
                "pixels": round(px.area),
                "geometry": geometry_to_map(px, scene),
            }
        )
    if not rows:  # every level skipped (a scene far coarser than the model): an empty layer
        columns: dict[str, list[Any]] = {"level": [], "downsample": [], "pixels": []}
        return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=scene.crs_wkt))
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=scene.crs_wkt)


def write_coverage(path: str | os.PathLike[str], frame: gpd.GeoDataFrame) -> None:
    """Write the coverage in the format the extension names (GeoJSON in WGS84)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"coverage {os.fspath(path)!r}: unknown format {suffix or '(no extension)'}; "
            f"use one of {', '.join(FORMATS)}"
        )
    write_frame(target, frame, layer="coverage")
