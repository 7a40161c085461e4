"""Areas of interest: scan only where the analyst looks, keep only what lies there.

An AOI is read in any vector format and CRS geopandas reads (or given as a GeoJSON object in
WGS84, as the service receives it), reprojected into the scene's CRS and moved into level-0
pixel coordinates through the inverse of the scene's affine, so everything downstream — which
blocks are read, which detections are kept — is a plain geometric test in pixels, rotation-safe.
A block is scanned when its *core* touches the AOI (cores partition the scene and a detection
belongs to the core holding its centre, so no detection centred in the AOI can be missed); a
detection is kept when its centre lies in the AOI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from pyproj import CRS
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, warn
from geo_hires.georef import geometry_to_pixels
from geo_hires.scene.open import Scene
from geo_hires.vectorfile import read_vector

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["AoiWarning", "AreaOfInterest", "PartCount", "load_aoi"]


class AoiWarning(UserWarning):
    """The AOI does not intersect the scene: nothing is scanned, the result is empty."""


@dataclasses.dataclass(frozen=True)
class PartCount:
    """Detections of one class centred in one polygon of the AOI."""

    part: int
    name: str
    class_name: str
    count: int


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class AreaOfInterest:
    """An AOI in a scene's level-0 pixel coordinates.

    Attributes:
        pixels: (Multi)polygon in level-0 pixel coordinates (x = column, y = row).
        wgs84: The AOI as a GeoJSON geometry in WGS84 (for the output's provenance).
        source: Where it came from (a file name, or ``"request"``).
        parts: Each polygon feature of the AOI as ``(name, geometry in level-0 pixels)``, in
            the order given; its name is the feature's ``name`` (or ``id``) property, else
            its 1-based position. Analysts count per apron, per parking area: these are the
            areas :meth:`counts` counts in.
    """

    pixels: BaseGeometry
    wgs84: dict[str, Any]
    source: str
    parts: tuple[tuple[str, BaseGeometry], ...] = ()

    @property
    def digest(self) -> str:
        """Identity of the geometry (a journal made with another AOI is not reused)."""
        wkb = shapely.to_wkb(shapely.set_precision(self.pixels, 1e-3))
        return hashlib.sha256(wkb).hexdigest()[:16]

    def touches_window(self) -> Callable[[Window], bool]:
        """A test for level-0 windows (block cores): do they intersect the AOI?"""
        prepared = shapely.prepared.prep(self.pixels)

        def test(w: Window) -> bool:
            box = shapely.box(w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height)
            return bool(prepared.intersects(box))

        return test

    def keep(self, dets: PixelDetections) -> PixelDetections:
        """Only the detections whose box centre lies in the AOI (boundary included)."""
        if not len(dets):
            return dets
        cx = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
        cy = (dets.boxes[:, 1] + dets.boxes[:, 3]) / 2
        inside = shapely.intersects_xy(self.pixels, cx, cy)
        return dets.take(np.flatnonzero(inside))

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "geometry": self.wgs84}

    def counts(self, dets: PixelDetections) -> tuple[PartCount, ...]:
        """Per polygon and class (the detections' classes, in their order), how many
        detections have their box centre in the polygon (boundary included; polygons that
        overlap both count a detection between them). Zero counts are kept."""
        cx = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
        cy = (dets.boxes[:, 1] + dets.boxes[:, 3]) / 2
        rows = []
        for i, (name, geom) in enumerate(self.parts):
            inside = shapely.intersects_xy(geom, cx, cy) if len(dets) else np.zeros(0, bool)
            for c, class_name in enumerate(dets.class_names):
                n = int(np.count_nonzero(inside & (dets.classes == c)))
                rows.append(PartCount(i, name, class_name, n))
        return tuple(rows)


def _finite(frame: gpd.GeoDataFrame) -> bool:
    """Whether every vertex is a number (``total_bounds`` skips NaN; GEOS fails on it)."""
    return bool(np.isfinite(shapely.get_coordinates(frame.geometry.values)).all())


def _polygons(frame: gpd.GeoDataFrame, source: str) -> gpd.GeoDataFrame:
    polys = frame[frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polys.empty:
        raise ConfigError(
            f"AOI {source} holds no polygon; give polygons (points and lines are not areas)"
        )
    if not _finite(polys):
        raise ConfigError(f"AOI {source} has coordinates that are not numbers")
    x0, y0, x1, y1 = polys.total_bounds
    if polys.crs.is_geographic and not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise ConfigError(
            f"AOI {source} reaches longitude {x0:g}..{x1:g}, latitude {y0:g}..{y1:g}, outside "
            "-180..180 and -90..90; give longitude first, then latitude (GeoJSON's order)"
        )
    return polys


def _read(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    frame = read_vector(path, "the AOI")
    if frame.crs is None:
        raise ConfigError(f"AOI {path} has no CRS; save it with one (e.g. EPSG:4326)")
    return frame


def _from_geojson(obj: dict[str, Any]) -> gpd.GeoDataFrame:
    import geopandas as gpd

    kind = obj.get("type") if isinstance(obj, dict) else None
    try:
        if kind == "FeatureCollection":
            return gpd.GeoDataFrame.from_features(obj, crs="EPSG:4326")
        if kind == "Feature":
            return gpd.GeoDataFrame.from_features([obj], crs="EPSG:4326")
        return gpd.GeoDataFrame(geometry=[shapely.geometry.shape(obj)], crs="EPSG:4326")
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.ShapelyError) as exc:
        raise ConfigError(f"the AOI is not valid GeoJSON ({exc})") from exc


def _part_names(polys: gpd.GeoDataFrame) -> list[str]:
    names = []
    for i, (_, row) in enumerate(polys.iterrows()):
        # a property some features lack is NaN in theirs (NaN != NaN): not a name
        given = [row[k] for k in ("name", "id") if k in row and row[k] is not None]
        given = [v for v in given if v == v]
        names.append(str(given[0]) if given else str(i + 1))
    return names


def load_aoi(aoi: str | os.PathLike[str] | dict[str, Any], scene: Scene) -> AreaOfInterest:
    """An AOI file (any format and CRS) or GeoJSON object (WGS84) in ``scene``'s pixels.

    Raises:
        ConfigError: Missing or unreadable file, no CRS, no polygon, or a scene without a CRS.

    Warns:
        AoiWarning: The AOI does not intersect the scene (the result will be empty).
    """
    source = Path(aoi).name if not isinstance(aoi, dict) else "request"
    frame = _from_geojson(aoi) if isinstance(aoi, dict) else _read(aoi)
    polys = _polygons(frame, source)
    if scene.crs_wkt is None:
        raise ConfigError(f"{scene.path} has no CRS, so an AOI cannot be placed on it")
    projected = polys.to_crs(CRS.from_wkt(scene.crs_wkt))
    if not _finite(projected):
        raise ConfigError(
            f"AOI {source} cannot be moved into the CRS of {Path(scene.path).name} (some of its "
            "points have no place there); give an AOI around the scene"
        )
    in_scene = shapely.make_valid(projected.union_all())
    pixels = shapely.make_valid(geometry_to_pixels(in_scene, scene))
    parts = tuple(
        (name, shapely.make_valid(geometry_to_pixels(shapely.make_valid(g), scene)))
        for name, g in zip(_part_names(polys), projected.geometry, strict=True)
    )
    footprint = shapely.box(0, 0, scene.width, scene.height)
    if not pixels.intersects(footprint):
        warn(
            f"the AOI {source} does not intersect {Path(scene.path).name}: nothing is scanned",
            AoiWarning,
            stacklevel=3,
        )
    wgs84 = shapely.geometry.mapping(  # set_precision normalises: rings clockwise; RFC 7946
        shapely.orient_polygons(shapely.set_precision(polys.to_crs("EPSG:4326").union_all(), 1e-8))
    )
    return AreaOfInterest(pixels=pixels, wgs84=dict(wgs84), source=source, parts=parts)
