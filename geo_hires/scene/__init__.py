"""Scene stage: open rasters, read windows, normalise pixels, make synthetic scenes."""

from geo_hires.scene.open import SUPPORTED_DTYPES, Scene, gdal_env, open_scene
from geo_hires.scene.read import SceneReader, Stretch, WindowData, overview_shape
from geo_hires.scene.synth import CLASS_NAMES, Density, SynthSpec, plan_objects, write_synthetic

__all__ = [
    "CLASS_NAMES",
    "SUPPORTED_DTYPES",
    "Density",
    "Scene",
    "SceneReader",
    "Stretch",
    "SynthSpec",
    "WindowData",
    "gdal_env",
    "open_scene",
    "overview_shape",
    "plan_objects",
    "write_synthetic",
]
