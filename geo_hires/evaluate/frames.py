"""Put predictions and truth in one frame before scoring them."""

from __future__ import annotations

import dataclasses

import numpy as np
from pyproj import CRS
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from geo_hires.detections import PixelDetections
from geo_hires.errors import LabelReadError, option
from geo_hires.georef import reproject
from geo_hires.labels.read import LabelSet
from geo_hires.scene.open import Scene

__all__ = ["common_frame", "local_utm"]


def local_utm(labels: LabelSet) -> CRS:
    """The WGS84 UTM zone holding the centre of ``labels`` (a metric frame for IoU); beyond
    UTM's latitudes (84 N, 80 S), the polar stereographic zone (UPS) of that pole."""
    if labels.crs is None:
        raise LabelReadError("local_utm needs map-coordinate labels")
    pts = np.concatenate(labels.rings) if labels.rings else np.zeros((1, 2))
    lon, lat = reproject(pts, labels.crs, "EPSG:4326").mean(axis=0)
    info = query_utm_crs_info(
        datum_name="WGS 84",
        area_of_interest=AreaOfInterest(float(lon), float(lat), float(lon), float(lat)),
    )
    if not info:
        return CRS.from_epsg(32661 if lat > 0 else 32761)
    return CRS.from_epsg(int(info[0].code))


def _in_crs(labels: LabelSet, crs: CRS) -> LabelSet:
    if labels.crs is None:
        return labels
    rings = tuple(reproject(r, labels.crs, crs) for r in labels.rings)
    return dataclasses.replace(labels, rings=rings, crs=None)


def common_frame(
    pred: LabelSet, truth: LabelSet, scene: Scene | None
) -> tuple[PixelDetections, PixelDetections]:
    """Boxes of ``pred`` and ``truth`` in one frame.

    Scene pixels when ``scene`` is given; pixels as they are when both files are in pixels;
    metres of a local UTM zone when both are in map coordinates (IoU is then measured on the
    ground, whatever CRS each file was written in).

    Raises:
        LabelReadError: One file is in pixels, the other on the map, and no scene links them.
    """
    if scene is not None:
        return pred.to_pixels(scene), truth.to_pixels(scene)
    if (pred.crs is None) != (truth.crs is None):
        raise LabelReadError(
            f"one file is in pixel coordinates and the other on the map; pass "
            f"{option('--scene SCENE', api='scene=')}"
        )
    if truth.crs is None:
        return pred.to_pixels(None), truth.to_pixels(None)
    utm = local_utm(truth)
    return _in_crs(pred, utm).to_pixels(None), _in_crs(truth, utm).to_pixels(None)
