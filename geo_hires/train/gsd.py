"""Scenes at other ground sample distances: what a model meets in the field, made from the
labelled scenes it was trained or validated on.

A scene at GSD ``g`` is made from one at ``native`` by averaging its pixels (``g`` coarser:
what a coarser sensor records) or interpolating them (``g`` finer: the best a resampled
product can offer), and written as a GeoTIFF whose CRS says ``g`` (an arbitrary UTM origin:
the labels are in pixels), so a run reads it exactly as a user's scene at that GSD. Labels go
with it by the same factor.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.enums import Resampling

from geo_hires.detections import PixelDetections

__all__ = ["at_gsd", "scaled_truth"]


def at_gsd(
    src: str | os.PathLike[str], gsd: float, out: str | os.PathLike[str], *, native: float
) -> float:
    """Write ``src`` (pixels of ``native`` metres) at ``gsd`` to ``out`` (kept when already
    there); returns the factor from ``src``'s pixels to ``out``'s."""
    target = Path(out)
    with rasterio.open(src) as s:
        factor = native / gsd
        h, w = round(s.height * factor), round(s.width * factor)
        if not target.is_file():
            method = Resampling.average if gsd >= native else Resampling.bilinear
            bands = list(range(1, min(s.count, 3) + 1))
            data = s.read(bands, out_shape=(len(bands), h, w), resampling=method)
            profile = {
                "driver": "GTiff", "width": w, "height": h, "count": len(bands),
                "dtype": data.dtype.name, "crs": "EPSG:32631",
                "transform": Affine(gsd, 0, 500000, 0, -gsd, 5400000), "tiled": True,
                "blockxsize": 256, "blockysize": 256, "compress": "deflate",
            }  # fmt: skip
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            with rasterio.open(tmp, "w", **profile) as d:
                d.write(data)
            os.replace(tmp, target)
        return w / s.width


def scaled_truth(truth: PixelDetections, factor: float) -> PixelDetections:
    """Labels in a scene's pixels, in the pixels of its copy scaled by ``factor``."""
    corners = None if truth.corners is None else truth.corners * factor
    return dataclasses.replace(truth, boxes=truth.boxes * factor, corners=corners)
