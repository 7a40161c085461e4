"""The cascade's pure steps, pinned on hand-made boxes: which candidates the refiner's boxes
replace (IoU, class), with what scores, and what the threshold drops (the windows it plans:
``test_refine_windows.py``)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from geo_hires.detect.cascade import (
    MATCH_IOU,
    box_iou,
    combine,
    confirmed,
    drop_truncated,
)
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.models.card import CascadeRule
from tests.detect.rows import CLASSES, LEVELS
from tests.detect.rows import dets as _dets

# candidates (scanner levels 0 and 1) and refiner boxes (level 2), with the IoUs that decide:
CANDIDATES = _dets(
    [
        (0, 0, 10, 10, 0.80, 0, 0),  # A: R1 overlaps it at IoU 81/119 = 0.68 -> replaced
        (100, 100, 110, 110, 0.60, 0, 1),  # B: R2 at 60/140 = 0.43 -> replaced
        (200, 200, 210, 210, 0.40, 1, 0),  # C: R3 overlaps it well, but is of another class
        (300, 300, 310, 310, 0.15, 0, 0),  # D: unmatched, 0.15 * 0.5 < 0.1 -> dropped
        (400, 400, 410, 410, 0.70, 0, 1),  # E: R4 at 30/170 = 0.18 < 0.3 -> kept, halved
        (500, 500, 510, 510, 0.90, 0, 0),  # F: R5 at 0.31 (just over) -> replaced
    ]
)
REFINED = _dets(
    [
        (1, 1, 11, 11, 0.95, 0, 2),  # R1
        (104, 100, 114, 110, 0.85, 0, 2),  # R2
        (201, 201, 211, 211, 0.75, 0, 2),  # R3
        (407, 400, 417, 410, 0.65, 0, 2),  # R4
        (505.27, 500, 515.27, 510, 0.55, 0, 2),  # R5: IoU 47.3 / 152.7 = 0.31
        (900, 900, 910, 910, 0.05, 0, 2),  # R6: under the threshold -> dropped
    ]
)
RULE = CascadeRule(detector="yolo.pt", unmatched_scale=0.5)


def _rows(d: PixelDetections) -> list[tuple[float, ...]]:
    return sorted(
        (*(round(v, 2) for v in b), round(float(s), 4), int(c), int(lv))
        for b, s, c, lv in zip(d.boxes, d.scores, d.classes, d.levels, strict=True)
    )


def test_the_ious_of_the_fixture_are_what_its_comments_say():
    import torch
    import torchvision

    iou = torchvision.ops.box_iou(torch.tensor(CANDIDATES.boxes),
                                  torch.tensor(REFINED.boxes)).numpy()  # fmt: skip
    assert iou[0, 0] == pytest.approx(81 / 119)
    assert iou[1, 1] == pytest.approx(60 / 140)
    assert iou[4, 3] == pytest.approx(30 / 170) and iou[4, 3] < MATCH_IOU
    assert MATCH_IOU < iou[5, 4] < 0.32


def test_refiner_boxes_replace_the_candidates_they_match_and_keep_the_others_halved():
    out = combine(CANDIDATES, REFINED, RULE, threshold=0.1)
    assert _rows(out) == sorted(
        [
            (1, 1, 11, 11, 0.95, 0, 2),
            (104, 100, 114, 110, 0.85, 0, 2),
            (201, 201, 211, 211, 0.75, 0, 2),
            (407, 400, 417, 410, 0.65, 0, 2),
            (505.27, 500, 515.27, 510, 0.55, 0, 2),
            (200, 200, 210, 210, 0.20, 1, 0),  # C: the refiner's box is of another class
            (400, 400, 410, 410, 0.35, 0, 1),  # E: too little overlap, score halved
        ]
    )
    # the count is the refiner's boxes over the threshold plus the unmatched candidates kept
    assert len(out) == 5 + 2
    assert out.level_names == LEVELS and out.class_names == CLASSES


def test_an_unmatched_scale_of_zero_keeps_only_the_refiners_boxes():
    out = combine(CANDIDATES, REFINED, CascadeRule(detector="y.pt", unmatched_scale=0.0), 0.1)
    assert set(out.levels.tolist()) == {2} and len(out) == 5


def test_threshold_is_inclusive_and_applies_to_both_sources():
    out = combine(CANDIDATES, REFINED, RULE, threshold=0.35)  # E lands exactly on it
    assert (400, 400, 410, 410, 0.35, 0, 1) in _rows(out)
    assert not any(r[:4] == (200, 200, 210, 210) for r in _rows(out))  # C at 0.2 is gone
    out = combine(CANDIDATES, REFINED, RULE, threshold=0.7)
    assert _rows(out) == sorted([(1, 1, 11, 11, 0.95, 0, 2), (104, 100, 114, 110, 0.85, 0, 2),
                                 (201, 201, 211, 211, 0.75, 0, 2)])  # fmt: skip


def test_without_refiner_boxes_every_candidate_is_kept_scaled_and_vice_versa():
    none = PixelDetections.empty(CLASSES, LEVELS)
    out = combine(CANDIDATES, none, RULE, threshold=0.1)
    assert sorted(out.scores.tolist()) == pytest.approx(sorted([0.4, 0.3, 0.2, 0.35, 0.45]))
    only = combine(none, REFINED, RULE, threshold=0.1)
    assert len(only) == 5 and set(only.levels.tolist()) == {2}


def test_output_is_in_canonical_order():
    out = combine(CANDIDATES, REFINED, RULE, threshold=0.1)
    again = combine(CANDIDATES.take(np.arange(len(CANDIDATES))[::-1]), REFINED, RULE, 0.1)
    assert np.array_equal(out.boxes, again.boxes) and np.array_equal(out.scores, again.scores)


def test_shipped_cascade_keeps_the_refiners_boxes_plus_only_the_unmatched_candidates(demo_crop):
    """End to end on real pixels: a candidate the refiner confirmed (IoU >= MATCH_IOU, same
    class) is replaced, one it did not is kept at ``unmatched_scale`` times its score."""
    import torch
    import torchvision

    from geo_hires.detect.options import DetectConfig
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    model = load_bundle("aircraft_cascade")
    card = model.card
    rule = card.cascade
    assert rule is not None
    scene = open_scene(demo_crop(1024, 512, 1536, 1024))  # an apron with parked aircraft
    cfg = DetectConfig(score_threshold=0.05)  # every refiner box is in the output
    out = detect_scene(scene, model, config=cfg).detections
    gate = DetectConfig(score_threshold=rule.gate_threshold)
    scanner = dataclasses.replace(model, card=dataclasses.replace(card, cascade=None))
    cands = detect_scene(scene, scanner, config=gate)
    c = cands.detections
    refined = out.take(out.levels == len(card.levels))
    iou = torchvision.ops.box_iou(torch.tensor(c.boxes), torch.tensor(refined.boxes))
    matched = ((iou.numpy() >= MATCH_IOU) & (c.classes[:, None] == refined.classes)).any(axis=1)
    scaled = c.scores * rule.unmatched_scale
    unmatched = ~matched & (scaled >= cfg.score_threshold)
    assert matched.sum() >= 5 and unmatched.sum() >= 1  # both cases occur on this crop
    assert len(out) == len(refined) + unmatched.sum()
    kept = out.take(out.levels != len(card.levels))
    np.testing.assert_allclose(np.sort(kept.scores), np.sort(scaled[unmatched]))


def test_drop_truncated_only_at_interior_edges():
    dets = PixelDetections.build(
        [[101, 100, 120, 120], [110, 150, 130, 170], [190, 100, 200, 110], [150, 290, 160, 300]],
        [0.9] * 4,
        [0] * 4,
        class_names=["a"],
    )
    # window x in [100, 200) of a 200x300 scene: only its left edge is interior
    kept = drop_truncated(dets, (100, 0, 200, 300), scene_size=(200, 300), margin=2)
    np.testing.assert_array_equal(kept.boxes[:, 0], [110, 190, 150])


def test_drop_truncated_keeps_boxes_on_the_scenes_own_left_and_top_edges():
    dets = PixelDetections.build([[1, 40, 20, 60], [40, 1, 60, 20]], [0.9] * 2, [0] * 2,
                                 class_names=["a"])  # fmt: skip
    kept = drop_truncated(dets, (0, 0, 100, 100), scene_size=(100, 100), margin=2)
    assert len(kept) == 2  # within the margin of x = 0 and y = 0, which are no interior edges


def test_drop_truncated_edges_are_inclusive_within_the_margin():
    # window [100, 200) x [50, 150) inside a 300 x 300 scene: all four edges are interior
    window = (100, 50, 200, 150)
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
    kept = drop_truncated(dets, window, scene_size=(300, 300), margin=2)
    # exactly at the margin counts as touching; half a pixel inside does not
    assert sorted(map(tuple, kept.boxes.tolist())) == sorted(
        tuple(map(float, b)) for b in (xs[1], xs[3], ys[1], ys[3])
    )
    # a window one pixel from the scene's left/top edge still has interior left/top edges
    near = PixelDetections.build(
        [[1.5, 30, 20, 50], [30, 1.5, 50, 20]], [0.9] * 2, [0] * 2, class_names=["a"]
    )
    assert len(drop_truncated(near, (1, 1, 101, 101), scene_size=(300, 300), margin=2)) == 0


class _Recording:
    """The real ultralytics model, with the shape of every image it was given."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def predict(self, images, **kw):
        self.shapes += [im.shape[:2] for im in images]
        return self.model.predict(images, **kw)


def _at_gsd(src, gsd: float, out):
    """``src`` (0.5 m) resampled to ``gsd`` (averaged down, bilinear up), its CRS saying so."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling

    with rasterio.open(src) as s:
        h, w = round(s.height * 0.5 / gsd), round(s.width * 0.5 / gsd)
        how = Resampling.average if gsd > 0.5 else Resampling.bilinear
        data = s.read(out_shape=(s.count, h, w), resampling=how)
        t = s.transform
        profile = {**s.profile, "width": w, "height": h,
                   "transform": Affine(gsd, 0, t.c, 0, -gsd, t.f)}  # fmt: skip
    with rasterio.open(out, "w", **profile) as d:
        d.write(data)
    return out


@pytest.mark.parametrize(("gsd", "downsample"), [(1.0, 0.5), (0.25, 2)])
def test_the_refiner_reads_its_windows_at_its_own_gsd(demo_crop, tmp_path, gsd, downsample):
    """A 1.0 m scene reaches the refiner upsampled x2, a 0.25 m one averaged x2: its 256 px
    windows always cover 128 m, what it was trained on."""
    from geo_hires.detect.options import DetectConfig
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    scene = open_scene(_at_gsd(demo_crop(1024, 512, 1536, 1024), gsd, tmp_path / "s.tif"))
    bundle = load_bundle("aircraft_cascade")
    rec = _Recording(bundle.yolo["yolo.pt"])
    watched = dataclasses.replace(bundle, yolo={"yolo.pt": rec})
    result = detect_scene(scene, watched, DetectConfig(score_threshold=0.3))
    refine = result.levels[-1]
    assert refine.name == "refine" and refine.downsample == downsample and refine.blocks > 3
    assert set(rec.shapes) == {(256, 256)}  # the refiner's own window, in its pixels
    sides = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in refine.cores}
    assert sides == {(round(256 * downsample), round(256 * downsample))}  # 128 m each
    assert (result.detections.levels == len(bundle.card.levels)).sum() >= 5  # it confirms


def test_a_candidate_at_exactly_match_iou_is_replaced():
    cand = _dets([(0, 0, 3, 10, 0.8, 0, 0)])  # inside the refiner's box: IoU 30 / 100 = 0.3
    refined = _dets([(0, 0, 10, 10, 0.9, 0, 2)])
    assert MATCH_IOU == 0.3
    assert _rows(combine(cand, refined, RULE, threshold=0.1)) == [(0, 0, 10, 10, 0.9, 0, 2)]


def test_box_iou_is_torchvisions_bit_for_bit_empty_and_touching_boxes_included():
    import torch
    import torchvision

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (60, 2))
    a = np.concatenate([xy, xy + rng.uniform(0, 40, (60, 2))], axis=1)
    a[:3, 2:] = a[:3, :2]  # zero-area boxes (0/0 with each other: NaN in both)
    a[3] = [10, 10, 20, 20]
    a[4] = [20, 10, 30, 20]  # touches a[3]: IoU 0
    b = np.concatenate([a[:5], a[rng.permutation(60)[:40]] + rng.normal(0, 5, (40, 4))])
    want = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 is expected: no RuntimeWarning for the user
        got = box_iou(a, b)
    assert got.shape == (60, 45) and got.dtype == np.float64
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[0, 0]) and got[3, 4] == 0.0 and got[3, 3] == 1.0
    assert (got[~np.isnan(got)] > 0).sum() > 60  # overlaps occur, not only zeros


@pytest.mark.parametrize("pairs", [1, 5, 6, 7, 35, 1 << 20])
def test_candidates_are_matched_in_chunks_with_the_same_answer(monkeypatch, pairs):
    """A bounded number of pairs at a time (one row per chunk up to all rows at once)."""
    import geo_hires.detect.cascade as cascade

    monkeypatch.setattr(cascade, "MATCH_PAIRS", pairs)
    assert confirmed(CANDIDATES, REFINED).tolist() == [True, True, False, False, False, True]
    assert not confirmed(CANDIDATES, REFINED.take(np.zeros(6, bool))).any()
    assert confirmed(CANDIDATES.take(np.zeros(6, bool)), REFINED).shape == (0,)


def test_matching_bounds_its_memory_by_pairs_not_by_the_scene():
    import tracemalloc

    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 1e5, (6000, 2))
    many = _dets([(*p, *(p + 20), 0.5, 0, 0) for p in xy])
    refined = _dets([(*p, *(p + 20), 0.9, 0, 2) for p in xy[:3000] + 2])
    tracemalloc.start()
    hit = confirmed(many, refined)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert hit[:3000].all() and not hit[3000:].any()
    assert peak < 150e6  # 18 M pairs at once held about 1 GB


def test_an_oriented_refiners_corners_survive_the_cascade_and_the_candidates_get_their_boxes():
    """An OBB refiner's rotated boxes replace the candidates they match with their corners
    intact (what heading, length and width are measured from); a candidate left unmatched
    keeps its axis-aligned box as four corners."""
    from pyproj import CRS

    from geo_hires.georef import oriented_dimensions

    t = np.radians(30)
    u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    bar = np.array([[100, 100] + s * 20 * u + r * 5 * v for s, r in
                    ((-1, -1), (1, -1), (1, 1), (-1, 1))])  # fmt: skip  # 40 x 10 px, at 30°
    refined = PixelDetections.oriented(bar[None], [0.9], [0], class_names=CLASSES,
                                       levels=[2], level_names=LEVELS)  # fmt: skip
    cands = _dets([(82, 88, 118, 112, 0.6, 0, 0), (300, 300, 310, 320, 0.8, 0, 1)])
    out = combine(cands, refined, RULE, threshold=0.1)
    assert out.corners is not None and len(out) == 2
    top = int(np.argmax(out.levels == 2))
    np.testing.assert_array_equal(out.corners[top], bar)
    left = 1 - top
    np.testing.assert_array_equal(
        out.corners[left], [[300, 300], [310, 300], [310, 320], [300, 320]]
    )
    heading, length, width = oriented_dimensions(out.corners[top][None], CRS.from_epsg(32633))[0]
    assert (length, width) == pytest.approx((40, 10)) and heading % 180 == pytest.approx(60)
    far = PixelDetections.oriented(bar[None] + 400, [0.7], [0], class_names=CLASSES,
                                   levels=[0], level_names=LEVELS)  # fmt: skip
    kept = combine(far, refined.take([]), RULE, threshold=0.1)  # an oriented candidate, alone
    assert kept.corners is not None  # was its envelope's four corners: the heading lost
    np.testing.assert_array_equal(kept.corners[0], bar + 400)
    box = PixelDetections.build(far.boxes, [0.9], [0], class_names=CLASSES, levels=[2],
                                level_names=LEVELS)  # fmt: skip  # confirms it, axis-aligned
    assert combine(far, box, RULE, threshold=0.1).corners is None  # no oriented box is left
    with pytest.raises(ConfigError, match=r"'margin' > 2 .a refiner box within 2 px"):
        CascadeRule(detector="y.pt", margin=2)  # its boxes near the edge are dropped as cut


def _thresholds(bundle) -> list[float]:
    """Each scanned level's score threshold, then the refiner's, on a run at 0.05."""
    import torch

    from geo_hires.detect.kinds import level_kinds
    from geo_hires.detect.levels import LevelScale
    from geo_hires.detect.options import DetectConfig

    scales = tuple(LevelScale(index=i, rule=r, downsample=r.downsample)
                   for i, r in enumerate(bundle.card.levels))  # fmt: skip
    kinds = level_kinds(
        bundle, DetectConfig(score_threshold=0.05), scales, device=torch.device("cpu"),
        scene_size=(512, 512), evidence_level=None,
    )  # fmt: skip
    return [kinds[i].threshold for i in sorted(kinds)]


def test_every_scanning_level_proposes_at_the_gate_and_the_refiner_at_the_runs_threshold():
    """An ultralytics level scans like the LSN: in a cascade it proposes at the gate, so only
    candidates that earn a look get a refiner window; without one it keeps the run's threshold."""
    from geo_hires.models.bundle import load_bundle

    assert _thresholds(load_bundle("aircraft_cascade")) == [0.3, 0.3, 0.05]  # LSN levels
    yolo = load_bundle("aircraft_yolo")
    assert _thresholds(yolo) == [0.05]
    rule = dataclasses.replace(RULE, gate_threshold=0.25)
    yolo_first = dataclasses.replace(yolo, card=dataclasses.replace(yolo.card, cascade=rule))
    assert _thresholds(yolo_first) == [0.25, 0.05]


def test_a_scene_too_coarse_for_the_refiner_keeps_only_candidates_at_the_runs_threshold(
    demo_crop, tmp_path
):
    """At 1.3 m the refiner (0.5 m, at most x2 up) is skipped; the scanner ran at the gate
    (0.3), so candidates between the gate and the user's threshold must not reach the output."""
    from geo_hires.detect.options import DetectConfig
    from geo_hires.errors import LevelSkippedWarning
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    scene = open_scene(_at_gsd(demo_crop(0, 0, 5120, 2560), 1.3, tmp_path / "s.tif"))
    bundle = load_bundle("aircraft_cascade")
    with pytest.warns(LevelSkippedWarning, match="refine"):
        low = detect_scene(scene, bundle, DetectConfig(score_threshold=0.3)).detections
    high = detect_scene(scene, bundle, DetectConfig(score_threshold=0.6)).detections
    between = (low.scores >= 0.3) & (low.scores < 0.6)
    assert between.sum() >= 3 and (low.scores >= 0.6).sum() >= 3  # the scene has both kinds
    assert high.scores.min() >= 0.6
    assert np.array_equal(high.boxes, low.take(low.scores >= 0.6).boxes)
