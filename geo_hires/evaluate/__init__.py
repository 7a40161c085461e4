"""Evaluation stage: COCO AP and precision/recall of predictions against ground truth."""

from geo_hires.evaluate.coco import ClassScore, EvalResult, evaluate
from geo_hires.evaluate.frames import common_frame, local_utm

__all__ = ["ClassScore", "EvalResult", "common_frame", "evaluate", "local_utm"]
