"""Seam and scale deduplication."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from rasterio.windows import Window

from geo_hires.config import MergeConfig, ScaleLevel, TilingConfig
from geo_hires.detections import PixelDetections
from geo_hires.merge import drop_truncated, merge_tiles, nms
from geo_hires.scene.synth import Density, SynthSpec, plan_objects
from geo_hires.tiling import Tile, plan_tiles
from tests.test_tiling import fake_scene


def _tile(x: int, y: int, width: int, height: int) -> Tile:
    w = Window(x, y, width, height)
    return Tile(level=0, index=(0, 0), window=w, core=w, downsample=1)


def test_drop_truncated_only_at_interior_edges():
    dets = PixelDetections.build(
        [[101, 100, 120, 120], [110, 150, 130, 170], [190, 100, 200, 110], [150, 290, 160, 300]],
        [0.9] * 4,
        [0] * 4,
        class_names=["a"],
    )
    # window x in [100, 200) of a 200x300 scene: only its left edge is interior
    kept = drop_truncated(dets, _tile(100, 0, 100, 300), scene_size=(200, 300), margin=2)
    np.testing.assert_array_equal(kept.boxes[:, 0], [110, 190, 150])


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
        torch.from_numpy(dets.boxes),
        torch.from_numpy(dets.scores),
        torch.from_numpy(dets.classes),
        0.5,
    )
    ref = dets.take(np.sort(keep.numpy())).canonical_order()
    assert len(ours) == len(ref) > 19000
    np.testing.assert_array_equal(ours.boxes, ref.boxes)


def test_windows_cut_from_truth_merge_back_to_truth():
    """Each window 'detects' the objects it wholly or partly sees; merge recovers the truth."""
    spec = SynthSpec(width=3000, height=2200, seed=5, density=Density.DENSE)
    truth, _ = plan_objects(spec)
    levels = (ScaleLevel(name="full", window=512, overlap=0.35),)
    (plan,) = plan_tiles(fake_scene(spec.width, spec.height), TilingConfig(levels=levels))
    parts = []
    for t in plan.tiles:
        x0, y0 = t.window.col_off, t.window.row_off
        x1, y1 = x0 + 512, y0 + 512
        clipped = np.clip(truth.boxes, [x0, y0, x0, y0], [x1, y1, x1, y1])
        seen = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        part = truth.take(seen)
        parts.append(
            (
                t,
                PixelDetections.build(
                    clipped[seen],
                    part.scores * 0.9,
                    part.classes,
                    class_names=truth.class_names,
                ),
            )
        )
    merged = merge_tiles(parts, scene_size=(spec.width, spec.height))
    assert merged is not None
    np.testing.assert_array_equal(merged.boxes, truth.canonical_order().boxes)


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
            torch.from_numpy(dets.boxes),
            torch.from_numpy(dets.scores),
            torch.from_numpy(dets.classes),
            iou,
        )
        ref = dets.take(np.sort(keep.numpy())).canonical_order()
        np.testing.assert_array_equal(ours.boxes, ref.boxes)
        np.testing.assert_array_equal(ours.scores, ref.scores)
        sizes.append(len(ours))
    assert sizes[0] < sizes[1]  # the thresholds really keep different sets


def test_drop_truncated_edges_are_inclusive_within_the_margin():
    # window [100, 200) x [50, 150) inside a 300 x 300 scene: all four edges are interior
    tile = _tile(100, 50, 100, 100)
    xs = [
        [102.0, 80, 120, 100],
        [102.5, 80, 120, 100],
        [150, 80, 198.0, 100],
        [150, 80, 197.5, 100],
    ]
    ys = [
        [120, 52.0, 140, 70],
        [120, 52.5, 140, 70],
        [120, 100, 140, 148.0],
        [120, 100, 140, 147.5],
    ]
    dets = PixelDetections.build(xs + ys, [0.9] * 8, [0] * 8, class_names=["a"])
    kept = drop_truncated(dets, tile, scene_size=(300, 300), margin=2)
    # exactly at the margin counts as touching; half a pixel inside does not
    assert sorted(map(tuple, kept.boxes.tolist())) == sorted(
        tuple(map(float, b)) for b in (xs[1], xs[3], ys[1], ys[3])
    )
    # a window one pixel from the scene's left/top edge still has interior left/top edges
    near = PixelDetections.build(
        [[1.5, 30, 20, 50], [30, 1.5, 50, 20]], [0.9] * 2, [0] * 2, class_names=["a"]
    )
    assert len(drop_truncated(near, _tile(1, 1, 100, 100), scene_size=(300, 300), margin=2)) == 0


def test_merge_tiles_uses_the_given_iou_threshold():
    tile = _tile(0, 0, 200, 200)
    dets = PixelDetections.build(
        [[10, 10, 110, 110], [20, 10, 120, 110]], [0.9, 0.8], [0, 0], class_names=["a"]
    )  # IoU 0.82
    default = merge_tiles([(tile, dets)], scene_size=(200, 200))
    loose = merge_tiles(
        [(tile, dets)], scene_size=(200, 200), config=MergeConfig(iou_threshold=0.9)
    )
    assert default is not None and loose is not None
    assert (len(default), len(loose)) == (1, 2)


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
