"""Seam and scale deduplication: grid NMS equals global NMS, thresholds, cell membership."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from geo_hires.config import MergeConfig
from geo_hires.detections import PixelDetections
from geo_hires.merge import nms


def _seam_duplicates(n: int, seed: int) -> PixelDetections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20000, (n, 2))
    wh = rng.uniform(8, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    jitter = boxes + rng.normal(0, 1.5, boxes.shape)  # the same object seen by a neighbour
    both = np.concatenate([boxes, jitter])
    return PixelDetections.build(
        both, rng.random(2 * n), np.tile(rng.integers(0, 3, n), 2), class_names=["a", "b", "c"]
    )


def test_grid_nms_equals_global_batched_nms():
    dets = _seam_duplicates(20000, seed=3)
    ours = nms(dets, config=MergeConfig(iou_threshold=0.5, cell_size=512))
    keep = torchvision.ops.batched_nms(
        torch.tensor(dets.boxes),
        torch.tensor(dets.scores),
        torch.tensor(dets.classes),
        0.5,
    )
    ref = dets.take(np.sort(keep.numpy())).canonical_order()
    assert len(ours) == len(ref) > 19000
    np.testing.assert_array_equal(ours.boxes, ref.boxes)


def test_nms_threshold_decides_which_overlaps_survive():
    # IoU(a, b) = 0.6, IoU(a, c) = 0.3, b and c apart; d covers a but is another class
    boxes = [[0, 0, 100, 100], [0, 0, 100, 60], [0, 70, 100, 100], [0, 0, 100, 100]]
    dets = PixelDetections.build(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 1], class_names=["a", "b"])

    def kept(iou):
        out = nms(dets, config=MergeConfig(iou_threshold=iou))
        return sorted(map(tuple, np.c_[out.boxes, out.classes].tolist()))

    a, b, c = (tuple(float(v) for v in x) for x in boxes[:3])
    d = (0.0, 0.0, 100.0, 100.0, 1.0)
    assert kept(0.25) == sorted([(*a, 0.0), d])  # a suppresses b and c
    assert kept(0.55) == sorted([(*a, 0.0), (*c, 0.0), d])  # b (0.6) goes, c (0.3) stays
    assert kept(0.65) == sorted([(*a, 0.0), (*b, 0.0), (*c, 0.0), d])  # nothing above 0.65


def test_grid_nms_equals_batched_nms_at_several_thresholds():
    dets = _seam_duplicates(3000, seed=8)
    sizes = []
    for iou in (0.2, 0.7):
        ours = nms(dets, config=MergeConfig(iou_threshold=iou, cell_size=256))
        keep = torchvision.ops.batched_nms(
            torch.tensor(dets.boxes),
            torch.tensor(dets.scores),
            torch.tensor(dets.classes),
            iou,
        )
        ref = dets.take(np.sort(keep.numpy())).canonical_order()
        np.testing.assert_array_equal(ours.boxes, ref.boxes)
        np.testing.assert_array_equal(ours.scores, ref.scores)
        sizes.append(len(ours))
    assert sizes[0] < sizes[1]  # the thresholds really keep different sets


def test_cell_memberships_by_hand():
    """Cell 100, halo 10: a box takes part in every cell whose halo-widened square holds its
    centre (lower edges inclusive, upper exclusive); its home cell holds the centre itself."""
    from geo_hires.merge.nms import _cell_memberships

    boxes = np.array(
        [
            [100, 100, 110, 110],  # centre (105, 105): home (1, 1), near (0, *) and (*, 0)
            [85, 245, 95, 255],  # centre (90, 250): home (0, 2); x = 90 is on cell 1's halo
            [305, 45, 315, 55],  # centre (310, 50): home (3, 0); x = 310 is past cell 2's
        ],
        float,
    )
    rows, keys, home = _cell_memberships(boxes, 100.0, 10.0)

    def key(gx, gy):
        return gx * 1_000_003 + gy

    got = sorted(zip(rows.tolist(), keys.tolist(), home.tolist(), strict=True))
    want = sorted(
        [
            (0, key(1, 1), True),
            (0, key(0, 0), False),
            (0, key(0, 1), False),
            (0, key(1, 0), False),
            (1, key(0, 2), True),
            (1, key(1, 2), False),
            (2, key(3, 0), True),
        ]
    )
    assert got == want


def test_batched_nms_equals_torchvision_on_both_of_its_paths():
    from geo_hires.merge.nms import batched_nms

    for n in (300, 1500):  # 4n coordinates: offsets below 4,000, per class above
        dets = _seam_duplicates(n, seed=n)
        args = (torch.tensor(dets.boxes), torch.tensor(dets.scores),
                torch.tensor(dets.classes), 0.5)  # fmt: skip
        assert torch.equal(batched_nms(*args), torchvision.ops.batched_nms(*args))


def test_detections_keep_their_own_read_only_arrays():
    """A frozen value cannot change under its holder: not through the caller's array, nor
    through the field itself, nor through a set derived from it."""
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]])
    dets = PixelDetections.build(boxes, [0.9], [0], class_names=("plane",))
    boxes[0, 0] = 5.0
    assert dets.boxes[0, 0] == 0.0
    moved = dets.shifted(1.0, 1.0)
    for arr in (dets.boxes, dets.scores, dets.classes, dets.levels, moved.boxes):
        with np.testing.assert_raises(ValueError):
            arr[0] = 0


def _filler(n=2100, seed=9):
    """Far-away boxes: enough of them for the grid path (more than 2,000 detections)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(10_000, 60_000, (n, 2))
    return np.c_[xy, xy + 20], rng.uniform(0.3, 0.9, n)


def test_the_grid_path_drops_non_finite_rows_and_breaks_ties_as_global_nms():
    """One NaN box made the halo NaN and the merge of a finished scan fail; two boxes of one
    score either side of a cell border kept the later one where global NMS keeps the first."""
    import warnings

    from geo_hires.errors import NonFiniteWarning

    boxes, scores = _filler()
    pair = np.array([[2036, 100, 2056, 120], [2042, 100, 2062, 120]], float)  # IoU 0.54
    all_boxes = np.r_[pair, boxes, [[5.0, 5.0, np.nan, 9.0]]]
    all_scores = np.r_[0.95, 0.95, scores, 0.5]
    dets = PixelDetections.build(all_boxes, all_scores, [0] * len(all_boxes), class_names=["a"])
    with pytest.warns(NonFiniteWarning, match="1 detections with a NaN"):
        ours = nms(dets, config=MergeConfig(iou_threshold=0.5, cell_size=512))
    finite = dets.take(np.arange(len(dets) - 1))
    keep = torchvision.ops.batched_nms(
        torch.tensor(finite.boxes), torch.tensor(finite.scores), torch.tensor(finite.classes), 0.5
    )
    ref = finite.take(np.sort(keep.numpy())).canonical_order()
    np.testing.assert_array_equal(ours.boxes, ref.boxes)
    assert [2036, 100, 2056, 120] in ours.boxes.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nms(finite)  # nothing dropped, nothing said
    d = PixelDetections.build(
        [[0, 0, 10, 10], [0, 0, 10, 40]], [0.7, 0.7], [0, 0], class_names=["a"]
    )
    assert nms(d).boxes.tolist() == nms(d.take([1, 0])).boxes.tolist()  # input order no key


def test_rotated_nms_takes_a_bow_tie():
    from geo_hires.merge.nms import rotated_nms

    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    bow_tie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    dets = PixelDetections.oriented([square, bow_tie], [0.9, 0.8], [0, 0], class_names=["a"])
    assert rotated_nms(dets, 0.5).tolist() in ([0], [0, 1])  # was a GEOS TopologyException
