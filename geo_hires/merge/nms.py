"""Deduplicate detections across window seams and scale levels.

Each level hands over boxes that are whole (a scanner block's core is exactly its part of one
pass over the level; a YOLO window keeps the boxes centred in its core; a refiner window drops
the boxes its interior edges cut, as in YOLT: the overlapping window saw them whole); here
class-aware NMS runs on them in level-0 pixel space, across seams and levels.

NMS is bucketed on a grid so its cost grows with the number of boxes, not its square: each box
belongs to the cell holding its centre and also takes part, as context, in the runs of
neighbouring cells whose border lies within a halo of twice the largest box side; a box is kept
when the run of its own cell keeps it. Every pair of overlapping boxes therefore meets in both
their cells' runs, so the result equals global greedy NMS except for suppression chains longer
than the halo (three or more boxes in a row each suppressing the next), which do not arise from
seam duplicates. torchvision's NMS kernel does the per-cell work; it is called per cell rather
than through ``batched_nms`` because the latter scans all boxes once per group. The kernel is
loaded from torchvision's compiled library without importing its Python package, whose
models, datasets and transforms would add about a second to every start.

Oriented boxes (an OBB model's) are merged on their polygons instead: axis-aligned NMS on
their envelopes would drop a vehicle parked diagonally across its neighbour's envelope. Neither
torchvision nor shapely offers rotated NMS, so the greedy loop is written here, over exact
polygon IoU from shapely with an STRtree to find the overlapping pairs.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
import torch

from geo_hires.config import MergeConfig
from geo_hires.detections import PixelDetections
from geo_hires.errors import NonFiniteWarning, option

__all__ = ["batched_nms", "nms", "nms_kernel", "rotated_nms"]

_SMALL = 2000  # below this many boxes one batched_nms call is cheapest and exact


def _cell_memberships(
    boxes: npt.NDArray[np.float64], cell: float, halo: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Rows of ``boxes`` repeated per cell they take part in: (row, cell key, is-home)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hx, hy = np.floor(cx / cell).astype(np.int64), np.floor(cy / cell).astype(np.int64)
    rows, keys, home = [], [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            gx, gy = hx + dx, hy + dy
            near = (
                (cx >= gx * cell - halo)
                & (cx < (gx + 1) * cell + halo)
                & (cy >= gy * cell - halo)
                & (cy < (gy + 1) * cell + halo)
            )
            idx = np.nonzero(near)[0]
            rows.append(idx)
            keys.append(gx[idx] * 1_000_003 + gy[idx])
            home.append(np.full(idx.size, dx == 0 and dy == 0))
    return np.concatenate(rows), np.concatenate(keys), np.concatenate(home)


def rotated_nms(dets: PixelDetections, iou_threshold: float) -> npt.NDArray[np.int64]:
    """Indices kept by class-aware greedy NMS on the oriented polygons (sorted)."""
    polys = shapely.make_valid(shapely.polygons(dets.corner_points()))  # a bow-tie: its parts
    areas = shapely.area(polys)
    order = np.lexsort((np.arange(len(dets)), -dets.scores))
    rank = np.empty(len(dets), np.int64)
    rank[order] = np.arange(len(dets))
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
    pair = (left != right) & (dets.classes[left] == dets.classes[right])
    left, right = left[pair], right[pair]
    inter = shapely.area(shapely.intersection(polys[left], polys[right]))
    iou = inter / np.maximum(areas[left] + areas[right] - inter, 1e-12)
    over = iou > iou_threshold
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(left[over].tolist(), right[over].tolist(), strict=True):
        neighbours.setdefault(a, []).append(b)
    suppressed = np.zeros(len(dets), bool)
    for i in order.tolist():
        if not suppressed[i]:
            for j in neighbours.get(i, ()):
                if rank[j] > rank[i]:
                    suppressed[j] = True
    return np.flatnonzero(~suppressed)


NmsOp = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@functools.cache
def nms_kernel() -> NmsOp:
    """torchvision's NMS kernel (what ``torchvision.ops.nms`` calls), loaded once."""
    spec = importlib.util.find_spec("torchvision")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    libs = [p for f in folders for p in sorted(Path(f).glob("_C*")) if p.suffix in {".so", ".pyd"}]
    if libs:
        torch.ops.load_library(str(libs[0]))
        return torch.ops.torchvision.nms
    import torchvision  # another layout: the package finds its own library

    return torchvision.ops.nms


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float
) -> torch.Tensor:
    """Class-aware NMS as ``torchvision.ops.batched_nms`` computes it on the CPU — per class
    above 4,000 coordinates, by offsetting each class's boxes apart below — so the kept boxes
    are the same, bit for bit."""
    kernel = nms_kernel()
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    if boxes.numel() > 4000:
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for c in torch.unique(classes):
            idx = torch.where(classes == c)[0]
            keep[idx[kernel(boxes[idx], scores[idx], iou)]] = True
        kept = torch.where(keep)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    offsets = classes.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return kernel(boxes + offsets[:, None], scores, iou)


def _finite(dets: PixelDetections) -> PixelDetections:
    """``dets`` without rows whose box, corners or score is NaN or infinite (a network whose
    arithmetic overflowed), with a warning: one such row made the grid's halo NaN, and the
    whole merge of a finished scan failed."""
    ok = np.isfinite(dets.boxes).all(axis=1) & np.isfinite(dets.scores)
    if dets.corners is not None:
        ok &= np.isfinite(dets.corners).all(axis=(1, 2))
    if ok.all():
        return dets
    warnings.warn(
        f"{int((~ok).sum())} detections with a NaN or infinite box or score were dropped (the "
        f"network's arithmetic overflowed?); if many, run with {option('--precision', 'fp32')}",
        NonFiniteWarning,
        stacklevel=3,
    )
    return dets.take(ok)


def nms(dets: PixelDetections, *, config: MergeConfig | None = None) -> PixelDetections:
    """Class-aware NMS in level-0 pixels, bucketed on a grid (see module docstring); on the
    polygons for oriented boxes.

    Returns the kept detections in canonical order.
    """
    config = config or MergeConfig()
    dets = _finite(dets)
    if len(dets) == 0:
        return dets
    if dets.corners is not None:
        return dets.take(rotated_nms(dets, config.iou_threshold)).canonical_order()
    boxes = torch.tensor(dets.boxes)  # copies: torch warns on a frozen set's read-only arrays
    scores = torch.tensor(dets.scores)
    if len(dets) <= _SMALL:
        keep = batched_nms(boxes, scores, torch.tensor(dets.classes), config.iou_threshold)
        return dets.take(np.sort(keep.numpy())).canonical_order()
    sides = np.maximum(dets.boxes[:, 2] - dets.boxes[:, 0], dets.boxes[:, 3] - dets.boxes[:, 1])
    halo = 2.0 * float(sides.max())
    cell = max(float(config.cell_size), 2.0 * halo)
    rows, keys, home = _cell_memberships(dets.boxes, cell, halo)
    group = keys * (int(dets.classes.max()) + 1) + dets.classes[rows]
    order = np.lexsort((rows, group))  # input order within a cell: ties broken as globally
    rows, group, home = rows[order], group[order], home[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], group.size]
    kept: list[npt.NDArray[np.int64]] = []
    for s, e in zip(starts, ends, strict=True):
        if not home[s:e].any():
            continue
        r = torch.from_numpy(rows[s:e])
        k = nms_kernel()(boxes[r], scores[r], config.iou_threshold).numpy()
        kept.append(rows[s:e][k[home[s:e][k]]])
    return dets.take(np.sort(np.concatenate(kept))).canonical_order()
