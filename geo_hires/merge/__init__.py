"""Merge stage: unit results of any executor into one canonical set, deduplicated across
window seams and levels by class-aware NMS."""

from geo_hires.merge.nms import nms, rotated_nms
from geo_hires.merge.results import merge_results

__all__ = ["merge_results", "nms", "rotated_nms"]
