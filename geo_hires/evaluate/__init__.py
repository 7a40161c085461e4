"""Evaluation stage: COCO AP and precision/recall of predictions against ground truth."""

from geo_hires.evaluate.coco import ClassScore, EvalResult, evaluate, evaluate_images
from geo_hires.evaluate.frames import common_frame, local_utm
from geo_hires.evaluate.scenes import evaluate_scenes, labelled_scene

__all__ = [
    "ClassScore",
    "EvalResult",
    "common_frame",
    "evaluate",
    "evaluate_images",
    "evaluate_scenes",
    "labelled_scene",
    "local_utm",
]
