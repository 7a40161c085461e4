"""geo_hires: find objects in huge georeferenced rasters fast; GeoJSON/GeoPackage out.

The entry points: :func:`run_detect` (a scene in, files out) with :class:`DetectOptions`;
:func:`detect_scene` on an opened :class:`Scene` with a loaded :class:`Bundle`
(:func:`load_bundle`, or :func:`load_pt` for your own ultralytics ``.pt``, passed as
``bundle=``), an area of interest placed on it by :func:`load_aoi`; :func:`run_batch` over a
list of scenes (a :class:`BatchReport`). Results are :class:`PixelDetections` (level-0
pixels); ``DetectResult.frame(scene)`` puts them on the map as a GeoDataFrame, the rows the
GeoPackage holds (:class:`GeoDetections` is the map form the exporters write from). Every
deliberate error derives from :class:`GeoHiresError`.

The package is laid out by stage — ``scene → detect → merge → export``, with ``pipeline``
wiring them and ``labels``/``evaluate``/``train`` around them — and each stage imports only
from the ones before it. Names here are loaded on first use, so ``import geo_hires`` (and
``geo-hires --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "AreaOfInterest": "geo_hires.aoi",
    "BatchReport": "geo_hires.pipeline",
    "Bundle": "geo_hires.models.bundle",
    "DetectConfig": "geo_hires.detect.options",
    "DetectOptions": "geo_hires.detect.options",
    "DetectResult": "geo_hires.pipeline",
    "GeoDetections": "geo_hires.detections",
    "GeoHiresError": "geo_hires.errors",
    "Outputs": "geo_hires.pipeline",
    "PixelDetections": "geo_hires.detections",
    "ReadConfig": "geo_hires.config",
    "Scene": "geo_hires.scene",
    "ZoomConfig": "geo_hires.detect.options",
    "detect_scene": "geo_hires.pipeline",
    "load_aoi": "geo_hires.aoi",
    "load_bundle": "geo_hires.models.bundle",
    "load_pt": "geo_hires.models.bundle",
    "open_scene": "geo_hires.scene",
    "run_batch": "geo_hires.pipeline",
    "run_detect": "geo_hires.pipeline",
}

__all__ = [
    "AreaOfInterest",
    "BatchReport",
    "Bundle",
    "DetectConfig",
    "DetectOptions",
    "DetectResult",
    "GeoDetections",
    "GeoHiresError",
    "Outputs",
    "PixelDetections",
    "ReadConfig",
    "Scene",
    "ZoomConfig",
    "__version__",
    "detect_scene",
    "load_aoi",
    "load_bundle",
    "load_pt",
    "open_scene",
    "run_batch",
    "run_detect",
]

if TYPE_CHECKING:
    from geo_hires.aoi import AreaOfInterest, load_aoi
    from geo_hires.config import ReadConfig
    from geo_hires.detect.options import DetectConfig, DetectOptions, ZoomConfig
    from geo_hires.detections import GeoDetections, PixelDetections
    from geo_hires.errors import GeoHiresError
    from geo_hires.models.bundle import Bundle, load_bundle, load_pt
    from geo_hires.pipeline import (
        BatchReport,
        DetectResult,
        Outputs,
        detect_scene,
        run_batch,
        run_detect,
    )
    from geo_hires.scene import Scene, open_scene


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geo_hires' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
