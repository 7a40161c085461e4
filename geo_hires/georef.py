"""Move boxes between scene pixels and map coordinates.

Pixel ``(col, row)`` maps to the map through the scene's affine at pixel *corners*, so a box
``[x0, x1) x [y0, y1)`` becomes the polygon of its four corners; under a rotated or sheared
transform that polygon is not axis-aligned, which is why map-frame detections are polygons and
never bounding boxes. Reprojection to WGS84 happens only at export.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from geo_hires.detections import GeoDetections, PixelDetections, box_corners
from geo_hires.scene.open import Scene
from geo_hires.scene.placement import apply_affine

__all__ = [
    "apply_affine",
    "box_corners",
    "geometry_to_map",
    "geometry_to_pixels",
    "lonlat_bounds",
    "map_to_pixel",
    "oriented_dimensions",
    "reproject",
    "split_antimeridian",
    "to_map",
    "to_pixels",
    "to_wgs84",
    "wrap_longitudes",
]

WGS84 = CRS.from_epsg(4326)


def reproject(
    xy: npt.NDArray[np.float64], src: CRS | str, dst: CRS | str
) -> npt.NDArray[np.float64]:
    """``(..., 2)`` coordinates from ``src`` to ``dst``, easting/longitude first."""
    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return xy.copy()
    t = Transformer.from_crs(src, dst, always_xy=True)
    x, y = t.transform(xy[..., 0], xy[..., 1])
    return np.stack([np.asarray(x), np.asarray(y)], axis=-1)


def oriented_dimensions(corners: npt.NDArray[np.float64], crs: CRS) -> npt.NDArray[np.float64]:
    """``(N, 4, 2)`` map-space corners of oriented boxes → ``(N, 3)`` heading (degrees
    clockwise from grid north, ``[0, 180)``), length and width (metres).

    Measured on the map, not in pixels, so that rotated scenes, non-square pixels and lon/lat
    grids report true values: side lengths through :func:`~geo_hires.scene.placement.metres`
    (geodesic on geographic CRSs), the heading of the long side through the geodesic azimuth on
    geographic CRSs and the grid's own axes otherwise.
    """
    from pyproj import Geod

    from geo_hires.scene.placement import metres

    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    side1 = metres(crs, a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    side2 = metres(crs, b[:, 0], b[:, 1], c[:, 0], c[:, 1])
    first = side1 >= side2
    p = np.where(first[:, None], a, b)
    q = np.where(first[:, None], b, c)
    if crs.is_geographic and len(p):
        heading = np.asarray(Geod(ellps="WGS84").inv(p[:, 0], p[:, 1], q[:, 0], q[:, 1])[0])
    else:
        heading = np.degrees(np.arctan2(q[:, 0] - p[:, 0], q[:, 1] - p[:, 1]))
    return np.stack(
        [np.mod(heading, 180.0), np.maximum(side1, side2), np.minimum(side1, side2)], axis=1
    )


def to_map(dets: PixelDetections, scene: Scene) -> GeoDetections:
    """Pixel boxes → 4-corner polygons in the scene CRS (pixel space when it has none);
    oriented boxes keep their corners and get their heading, length and width in metres."""
    corners = dets.corner_points()
    dims = None
    if scene.crs_wkt is not None:  # through GCPs or RPCs when the scene is placed by them
        xs, ys = scene.pixel_to_map(corners[..., 0], corners[..., 1])
        corners = np.stack([xs, ys], axis=-1).reshape(-1, 4, 2)
        if dets.corners is not None:
            dims = oriented_dimensions(corners, CRS.from_wkt(scene.crs_wkt))
    return GeoDetections(
        polygons=corners.reshape(-1, 4, 2),
        scores=dets.scores,
        classes=dets.classes,
        levels=dets.levels,
        class_names=dets.class_names,
        level_names=dets.level_names,
        crs=scene.crs_wkt,
        dimensions=dims,
    )


def wrap_longitudes(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(..., 2)`` lon/lat with every longitude in [-180, 180]: a raster in a geographic CRS
    may run past 180 (or -180), which RFC 7946 and STAC forbid; wrapped, a polygon across the
    antimeridian spans more than 180 degrees, as one reprojected from a projected CRS does,
    and :func:`split_antimeridian` cuts it."""
    lon = xy[..., 0]
    if not ((lon > 180) | (lon < -180)).any():
        return xy
    out = xy.copy()
    out[..., 0] = np.where((lon > 180) | (lon < -180), (lon + 180) % 360 - 180, lon)
    return out


def to_wgs84(geo: GeoDetections) -> GeoDetections:
    """Reproject polygons to EPSG:4326 (lon, lat; longitudes wrapped into [-180, 180]);
    pixel-space sets are returned unchanged."""
    if geo.crs is None:
        return geo
    poly = wrap_longitudes(reproject(geo.polygons, geo.crs, WGS84))
    return GeoDetections(
        polygons=poly,
        scores=geo.scores,
        classes=geo.classes,
        levels=geo.levels,
        class_names=geo.class_names,
        level_names=geo.level_names,
        crs=WGS84.to_wkt(),
        dimensions=geo.dimensions,
    )


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A lon/lat polygon that spans more than 180° of longitude, which is how one crossing
    the antimeridian comes out of a reprojection, as the MultiPolygon of its parts either side
    (RFC 7946 §3.1.9: else a client draws it around the world); any other unchanged."""
    x0, _, x1, _ = geom.bounds
    if not x1 - x0 > 180:
        return geom
    turn = np.array([360.0, 0.0])
    east = shapely.transform(geom, lambda xy: np.where(xy[:, :1] < 0, xy + turn, xy))
    parts = [
        shapely.clip_by_rect(east, -180, -90, 180, 90),
        shapely.transform(shapely.clip_by_rect(east, 180, -90, 540, 90), lambda xy: xy - turn),
    ]
    polys = [p for part in parts for p in shapely.get_parts(part) if isinstance(p, shapely.Polygon)]
    return shapely.MultiPolygon([shapely.orient_polygons(p) for p in polys if not p.is_empty])


def lonlat_bounds(geom: BaseGeometry) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of a lon/lat geometry; for one split at the antimeridian
    (:func:`split_antimeridian`) west is its eastern part's west edge and east its western
    part's east edge, so west > east (STAC and RFC 7946's bbox across the antimeridian)."""
    west, south, east, north = (float(v) for v in geom.bounds)
    boxes = [p.bounds for p in shapely.get_parts(geom)]
    far_east = [b for b in boxes if b[2] == 180]
    far_west = [b for b in boxes if b[0] == -180]
    if west == -180 and east == 180 and far_east and far_west and len(boxes) > 1:
        west, east = min(b[0] for b in far_east), max(b[2] for b in far_west)
    return west, south, east, north


def map_to_pixel(
    xy: npt.NDArray[np.float64], crs: str | None, scene: Scene
) -> npt.NDArray[np.float64]:
    """``(..., 2)`` map coordinates in ``crs`` → fractional scene pixels ``(col, row)``.

    ``crs=None`` means the coordinates already are scene pixels.
    """
    if crs is None or scene.crs_wkt is None:
        return xy.copy()
    local = reproject(xy, crs, scene.crs_wkt)
    cols, rows = scene.map_to_pixel(local[..., 0], local[..., 1])
    return np.stack([cols, rows], axis=-1)


def to_pixels(geo: GeoDetections, scene: Scene) -> PixelDetections:
    """Polygons in any CRS → the pixel boxes that bound them in ``scene``."""
    px = map_to_pixel(geo.polygons, geo.crs, scene)
    boxes = np.stack(
        [px[..., 0].min(1), px[..., 1].min(1), px[..., 0].max(1), px[..., 1].max(1)], axis=1
    )
    return PixelDetections(
        boxes=boxes.reshape(-1, 4),
        scores=geo.scores,
        classes=geo.classes,
        levels=geo.levels,
        class_names=geo.class_names,
        level_names=geo.level_names,
    )


_DENSIFY_PX = 32.0  # vertex spacing, in pixels, before a curved (GCP polynomial, RPC) mapping


def geometry_to_map(px: BaseGeometry, scene: Scene) -> BaseGeometry:
    """A geometry in scene pixels → the scene CRS (unchanged without a CRS). Under a curved
    placement, edges are first densified so they follow it between vertices."""
    if scene.crs_wkt is None:
        return px
    if not scene.exact_affine:
        px = shapely.segmentize(px, max_segment_length=_DENSIFY_PX)
    return shapely.transform(px, lambda xy: np.column_stack(scene.pixel_to_map(xy[:, 0], xy[:, 1])))


def geometry_to_pixels(geom: BaseGeometry, scene: Scene) -> BaseGeometry:
    """A geometry in the scene CRS → scene pixels; densified first under a curved placement,
    every ~32 pixels measured in the CRS's own units (degrees for RPC scenes)."""
    if not scene.exact_affine:
        t = scene.transform
        geom = shapely.segmentize(geom, max_segment_length=_DENSIFY_PX * math.hypot(t.a, t.d))
    return shapely.transform(
        geom, lambda xy: np.column_stack(scene.map_to_pixel(xy[:, 0], xy[:, 1]))
    )
