"""Tiling stage: multi-scale window plans whose cores partition the scene."""

from geo_hires.tiling.plan import (
    LevelPlan,
    Tile,
    axis_cores,
    axis_offsets,
    level_downsample,
    mask_lookup,
    plan_tiles,
)

__all__ = [
    "LevelPlan",
    "Tile",
    "axis_cores",
    "axis_offsets",
    "level_downsample",
    "mask_lookup",
    "plan_tiles",
]
