"""A scene scored as groups of boxes that overlap only each other scores as the whole."""

from __future__ import annotations

import numpy as np

import geo_hires.evaluate.coco as coco
from geo_hires.detections import PixelDetections
from geo_hires.evaluate import evaluate
from geo_hires.evaluate.islands import PACK, islands


def _scene(n: int, seed: int) -> tuple[PixelDetections, PixelDetections]:
    """Truth boxes, predictions jittered around 80 % of them, and false alarms elsewhere;
    random scores (no ties: COCO's order between equal scores is arbitrary either way)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 3000, (n, 2))
    truth = PixelDetections.build(
        np.c_[xy, xy + rng.uniform(10, 60, (n, 2))], np.ones(n), rng.integers(0, 3, n),
        class_names=["a", "b", "c"],
    )  # fmt: skip
    hit = rng.random(n) < 0.8
    alarms = rng.uniform(0, 3000, (n // 4, 2))
    boxes = np.r_[(truth.boxes + rng.normal(0, 4, (n, 4)))[hit], np.c_[alarms, alarms + 30]]
    classes = np.r_[truth.classes[hit], rng.integers(0, 3, n // 4)]
    pred = PixelDetections.build(
        boxes, rng.random(len(boxes)), classes, class_names=["a", "b", "c"]
    )
    return pred, truth


def test_groups_score_as_one_image_and_never_part_overlapping_boxes(monkeypatch):
    pred, truth = _scene(600, seed=4)
    parts = islands(pred, truth)
    assert len(parts) > 5 and sum(len(p) for p, _ in parts) == len(pred)
    assert max(len(p) + len(t) for p, t in parts) <= PACK
    assert sum(len(t) for _, t in parts) == len(truth)
    for i, (p, _) in enumerate(parts):  # no prediction overlaps a truth of another group
        for j, (_, t) in enumerate(parts):
            if i != j and len(p) and len(t):
                lo = np.maximum(p.boxes[:, None, :2], t.boxes[None, :, :2])
                hi = np.minimum(p.boxes[:, None, 2:], t.boxes[None, :, 2:])
                assert not ((hi - lo).min(axis=2) > 0).any()
    grouped = evaluate(pred, truth, threshold=0.5)
    monkeypatch.setattr(coco, "islands", lambda p, t: [(p, t)])
    whole = evaluate(pred, truth, threshold=0.5)
    assert grouped == whole and 0.3 < whole.overall.ap50 < 0.9
