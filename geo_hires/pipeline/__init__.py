"""The pipeline: the stages wired together for one scene (:func:`detect_scene`), one scene
with its outputs (:func:`run_detect`), and a list of scenes (:func:`run_batch`)."""

from geo_hires.pipeline.batch import BatchReport, read_scene_list, run_batch
from geo_hires.pipeline.detect import DetectResult, detect_scene
from geo_hires.pipeline.outputs import Outputs, run_detect

__all__ = [
    "BatchReport",
    "DetectResult",
    "Outputs",
    "detect_scene",
    "read_scene_list",
    "run_batch",
    "run_detect",
]
