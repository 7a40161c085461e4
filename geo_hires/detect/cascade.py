"""The cascade's second stage: windows around the scanner's candidates, and the swap of boxes.

The survey's cascade runs a cheap detector everywhere and a heavy one only where the cheap one
found something. Here the scanning levels (run at the cascade's low ``gate_threshold``) give
candidates; each gets a window of ``window`` pixels centred on it (larger when the candidate
is, so that it fits with ``margin`` to spare), unless an earlier window already holds it with
that margin; the refiner's boxes replace the candidates'. Both steps are pure functions of
their inputs, so a resumed or distributed run plans the same windows and keeps the same boxes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from geo_hires.detect.blocks import Block, batch_blocks
from geo_hires.detect.plan import Unit
from geo_hires.detections import PixelDetections
from geo_hires.models.card import CascadeRule

__all__ = [
    "MATCH_IOU",
    "MATCH_PAIRS",
    "box_iou",
    "combine",
    "confirmed",
    "drop_truncated",
    "plan_refine",
    "refine_units",
]

MATCH_IOU = 0.3
"""A candidate with a refiner box at this IoU or more was confirmed (and is replaced)."""
MATCH_PAIRS = 1 << 20
"""Candidate-refiner pairs matched at once (under 100 MB of intermediate arrays)."""


def _window(
    box: npt.NDArray[np.float64], rule: CascadeRule, size: tuple[int, int], align: int
) -> Block:
    w, h = size
    need = max(box[2] - box[0], box[3] - box[1]) + 2 * rule.margin
    side = max(rule.window, 32 * math.ceil(need / 32))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(min(max(0, round(cx - side / 2)), max(0, w - side)))
    y0 = int(min(max(0, round(cy - side / 2)), max(0, h - side)))
    x0, y0 = x0 - x0 % align, y0 - y0 % align  # whole scene pixels at an upsampled level
    x1, y1 = min(w, x0 + side), min(h, y0 + side)
    return Block(index=(y0, x0), x0=x0, y0=y0, x1=x1, y1=y1, cx0=x0, cy0=y0, cx1=x1, cy1=y1)


def _holds(block: Block, box: npt.NDArray[np.float64], margin: int, size: tuple[int, int]) -> bool:
    """``box`` lies inside ``block`` with ``margin`` to spare (none needed at the scene edge)."""
    return bool(
        (box[0] >= block.x0 + margin or block.x0 == 0)
        and (box[1] >= block.y0 + margin or block.y0 == 0)
        and (box[2] <= block.x1 - margin or block.x1 == size[0])
        and (box[3] <= block.y1 - margin or block.y1 == size[1])
    )


def plan_refine(
    candidates: PixelDetections, rule: CascadeRule, size: tuple[int, int], downsample: float = 1
) -> tuple[Block, ...]:
    """Windows that hold every candidate, strongest candidates first, in the pixels of the
    refiner's level: the scene (``size``, level-0) at ``downsample``, so that the refiner sees
    objects at the ground resolution it was trained at.

    A candidate already held by a window (with ``rule.margin``) adds none; windows at the
    scene's edge are shifted inside it. Ordered by position so that batches are stable.
    """
    boxes = candidates.boxes / downsample
    level = (math.ceil(size[0] / downsample), math.ceil(size[1] / downsample))
    align = round(1 / downsample) if downsample < 1 else 1
    order = np.lexsort((candidates.boxes[:, 0], candidates.boxes[:, 1], -candidates.scores))
    blocks: list[Block] = []
    for i in order:
        box = boxes[i]
        if not any(_holds(b, box, rule.margin, level) for b in blocks):
            blocks.append(_window(box, rule, level, align))
    return tuple(sorted(blocks, key=lambda b: (b.y0, b.x0, b.y1, b.x1)))


def refine_units(
    blocks: tuple[Block, ...], *, level: int, batch_size: int, downsample: float = 1
) -> tuple[Unit, ...]:
    """The refiner's windows as keyed work units (``R-U{k}``, level ``level``)."""
    ordered = sorted(blocks, key=lambda b: (b.shape, b.y0, b.x0))
    return tuple(
        Unit(key=f"R-U{k}", level=level, downsample=downsample, blocks=batch, kind="refine")
        for k, batch in enumerate(batch_blocks(ordered, batch_size))
    )


def combine(
    candidates: PixelDetections, refined: PixelDetections, rule: CascadeRule, threshold: float
) -> PixelDetections:
    """The refiner's boxes, plus the candidates it found nothing on (IoU < :data:`MATCH_IOU`
    with each refiner box of the class) with their score times ``rule.unmatched_scale``; boxes
    under ``threshold`` are dropped. Level indices are kept, so each box says where it came
    from."""
    left = candidates.take(~confirmed(candidates, refined))
    left = dataclasses.replace(  # an oriented candidate keeps its corners
        left, scores=left.scores * rule.unmatched_scale, class_names=refined.class_names,
        level_names=refined.level_names,
    )  # fmt: skip
    both = PixelDetections.concat([refined, left])
    return both.take(both.scores >= threshold).canonical_order()


def confirmed(candidates: PixelDetections, refined: PixelDetections) -> npt.NDArray[np.bool_]:
    """Whether each candidate has a refiner box of its class at IoU >= :data:`MATCH_IOU`.

    The IoU matrix is built :data:`MATCH_PAIRS` pairs at a time: a whole gigapixel scene has
    thousands of each, and one ``candidates x refined`` matrix with its intermediates took
    hundreds of MB at once (the run's peak memory)."""
    out = np.zeros(len(candidates), bool)
    rows = max(1, MATCH_PAIRS // max(1, len(refined)))
    for i in range(0, len(candidates), rows):
        part = slice(i, i + rows)
        iou = box_iou(candidates.boxes[part], refined.boxes)
        same = candidates.classes[part, None] == refined.classes[None, :]
        out[part] = ((iou >= MATCH_IOU) & same).any(axis=1)
    return out


def box_iou(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of each xyxy box in ``a`` with each in ``b``, ``(len(a), len(b))``, with the
    arithmetic of ``torchvision.ops.box_iou`` (same values, bit for bit); written here because
    importing torchvision's Python package costs over a second of a process's start."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(invalid="ignore"):  # two empty boxes: 0 / 0, NaN as in torch, no warning
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def drop_truncated(
    dets: PixelDetections,
    window: tuple[float, float, float, float],
    *,
    scene_size: tuple[int, int],
    margin: float,
) -> PixelDetections:
    """Drop boxes that touch an interior edge of ``window``. Every argument is in one pixel
    frame: the refiner calls it in its own level's pixels.

    Args:
        dets: Boxes of one window, in the whole level's (or scene's) frame.
        window: The window they came from, ``x0, y0, x1, y1``.
        scene_size: ``(width, height)`` of the level; edges on its border are not interior, so
            boxes there are kept.
        margin: Distance within which a box counts as touching an edge.
    """
    x0, y0, x1, y1 = (float(v) for v in window)
    b = dets.boxes
    cut = np.zeros(len(dets), bool)
    if x0 > 0:
        cut |= b[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= b[:, 1] <= y0 + margin
    if x1 < scene_size[0]:
        cut |= b[:, 2] >= x1 - margin
    if y1 < scene_size[1]:
        cut |= b[:, 3] >= y1 - margin
    return dets.take(~cut)
