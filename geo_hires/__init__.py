"""geo_hires: find objects in huge georeferenced rasters fast; GeoJSON/GeoPackage out.

The package is laid out by pipeline stage (``scene → tiling → merge → export``, with ``labels``
and ``evaluate`` for ground truth); each stage imports only from the ones before it.
"""

from geo_hires.config import (
    ExportConfig,
    MergeConfig,
    ReadConfig,
    ScaleLevel,
    SmallScenePolicy,
    TilingConfig,
    config_id,
)
from geo_hires.detections import GeoDetections, PixelDetections
from geo_hires.errors import GeoHiresError

__version__ = "0.1.0"

__all__ = [
    "ExportConfig",
    "GeoDetections",
    "GeoHiresError",
    "MergeConfig",
    "PixelDetections",
    "ReadConfig",
    "ScaleLevel",
    "SmallScenePolicy",
    "TilingConfig",
    "__version__",
    "config_id",
]
