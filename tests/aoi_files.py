"""An AOI file over a box of a scene's pixels, as the S3 tests and ``bench/remote.py`` use it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def box_aoi(path: Path, scene_path: str | os.PathLike[str], box: tuple[int, int, int, int]) -> Path:
    """A GeoJSON polygon (WGS84) over ``box`` = (col0, row0, col1, row1) of the scene's pixels."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(scene_path) as src:
        to_wgs84 = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        c0, r0, c1, r1 = box
        ring = [src.transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
    coords = [list(to_wgs84.transform(x, y)) for x, y in ring]
    geom = {"type": "Polygon", "coordinates": [[*coords, coords[0]]]}
    path.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": geom}))
    return path
