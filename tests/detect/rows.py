"""Detections written as rows, for tests that pin the cascade's steps on hand-made boxes."""

from __future__ import annotations

import numpy as np

from geo_hires.detections import PixelDetections

CLASSES = ("aircraft", "vehicle")
LEVELS = ("full", "coarse", "refine")


def dets(rows: list[tuple[float, float, float, float, float, int, int]]) -> PixelDetections:
    """Rows of ``x0, y0, x1, y1, score, class, level``."""
    a = np.array(rows, float).reshape(-1, 7)
    return PixelDetections.build(
        a[:, :4], a[:, 4], a[:, 5].astype(np.int64), class_names=CLASSES,
        levels=a[:, 6].astype(np.int64), level_names=LEVELS,
    )  # fmt: skip
