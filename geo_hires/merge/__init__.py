"""Merge stage: drop boxes cut by interior window edges, then class-aware NMS."""

from geo_hires.merge.nms import drop_truncated, merge_tiles, nms

__all__ = ["drop_truncated", "merge_tiles", "nms"]
