"""Cut one image's predictions and truth into groups that cannot match across each other.

Why: pycocotools matches every prediction against every truth of an image in Python, so a
whole scene scored as one image costs (predictions x truths x 10 thresholds): 3,000 against
3,000 took 21 s, 30,000 against 30,000 would take over half an hour. A prediction can only
match a truth it overlaps, so the connected groups of the overlap graph (a box, every box it
overlaps, theirs...) can be scored as separate COCO images with the same matches and the same
AP; only the order in which two detections of exactly equal score are ranked (COCO's tie order,
arbitrary either way) can differ. Groups are packed together, in a fixed order, up to
:data:`PACK` boxes per image, to keep the image count (each one pycocotools' own loop) low.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from geo_hires.detections import PixelDetections

__all__ = ["PACK", "islands"]

PACK = 64
"""Boxes per COCO image when groups are packed (a group larger than that is one image)."""


def _groups(pred: PixelDetections, truth: PixelDetections) -> npt.NDArray[np.int64]:
    """A group label per box, predictions first, then truths (union-find over overlaps)."""
    import shapely

    n = len(pred)
    parent = np.arange(n + len(truth))
    tree = shapely.STRtree(shapely.box(*truth.boxes.T))
    pi, ti = tree.query(shapely.box(*pred.boxes.T), predicate="intersects")

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in zip(pi.tolist(), (ti + n).tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(parent.size)], np.int64)


def islands(
    pred: PixelDetections, truth: PixelDetections
) -> list[tuple[PixelDetections, PixelDetections]]:
    """``(pred, truth)`` of one image as several images scoring the same (see module)."""
    if len(pred) + len(truth) <= PACK or not len(pred) or not len(truth):
        return [(pred, truth)]
    label = _groups(pred, truth)
    roots, sizes = np.unique(label, return_counts=True)  # roots ascending: a fixed order
    bins, fill, current = np.empty(label.size, np.int64), 0, 0
    size_of = dict(zip(roots.tolist(), sizes.tolist(), strict=True))
    bin_of: dict[int, int] = {}
    for r in roots.tolist():
        if fill and fill + size_of[r] > PACK:
            current, fill = current + 1, 0
        bin_of[r], fill = current, fill + size_of[r]
    bins[:] = [bin_of[r] for r in label.tolist()]
    n = len(pred)
    return [
        (pred.take(np.flatnonzero(bins[:n] == b)), truth.take(np.flatnonzero(bins[n:] == b)))
        for b in range(current + 1)
    ]
