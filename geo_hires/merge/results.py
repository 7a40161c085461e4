"""Unit results of any executor, in any order → one canonical, deduplicated detection set."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from geo_hires.config import MergeConfig
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.levels import level_names
from geo_hires.detect.options import DetectConfig
from geo_hires.detections import PixelDetections
from geo_hires.merge.nms import nms
from geo_hires.models.card import ModelCard
from geo_hires.scene import Scene

__all__ = ["merge_results"]


def merge_results(
    results: Iterable[UnitResult], card: ModelCard, scene: Scene, cfg: DetectConfig
) -> PixelDetections:
    """Unit results (any order) → clipped, NMS-merged detections in canonical order.

    Sorting by unit key first is what makes every executor (and a resumed run) give the same
    bytes: the merge never sees the order in which units finished.
    """
    names = level_names(card)
    ordered = sorted(results, key=lambda r: (r.level, int(r.key.rsplit("U", 1)[1])))
    parts = [
        dataclasses.replace(
            PixelDetections.build(
                r.boxes,
                r.scores,
                r.classes,
                class_names=card.classes,
                levels=np.full(len(r.scores), r.level),
                level_names=names,
            ),
            corners=r.corners,
        )
        for r in ordered
    ]
    merged = PixelDetections.concat(parts) if parts else PixelDetections.empty(card.classes, names)
    boxes = merged.boxes.copy()  # oriented corners are left as found: clipping would skew them
    np.clip(boxes[:, 0::2], 0, scene.width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, scene.height, out=boxes[:, 1::2])
    return nms(
        dataclasses.replace(merged, boxes=boxes),
        config=MergeConfig(iou_threshold=cfg.iou_threshold),
    )
