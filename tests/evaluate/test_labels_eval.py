"""COCO evaluation of detections against labels, and the eval command (the label formats
themselves: test_label_formats.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geo_hires.cli import main
from geo_hires.errors import ConfigError, LabelReadError
from geo_hires.evaluate import common_frame, evaluate
from geo_hires.labels import read_labels
from geo_hires.scene import open_scene


def test_truth_against_itself_is_perfect_and_jitter_is_worse(fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    labels = read_labels(fixtures / "OSBS_029.csv")
    pred, truth = common_frame(labels, labels, scene)
    perfect = evaluate(pred, truth)
    assert perfect.overall.ap50 == perfect.overall.ap50_95 == 1.0
    assert perfect.overall.precision == perfect.overall.recall == 1.0
    rng = np.random.default_rng(0)
    from dataclasses import replace

    jittered = replace(
        pred, boxes=pred.boxes + rng.normal(0, 4, pred.boxes.shape), scores=rng.random(len(pred))
    )
    worse = evaluate(jittered, truth)
    assert worse.overall.ap50_95 < 0.8 and worse.overall.ap50 < 1.0
    missing = evaluate(pred.take(np.arange(30)), truth)
    assert missing.overall.recall == pytest.approx(30 / 61) and missing.overall.precision == 1.0


def test_two_map_files_are_compared_on_the_ground(tmp_path, fixtures):
    scene = open_scene(fixtures / "sample_geotiff.tif")
    labels = read_labels(fixtures / "geotiff_labels.geojson")
    from geo_hires.export import write_geojson

    write_geojson(tmp_path / "p.geojson", labels.to_pixels(scene), scene)  # WGS84 copy
    pred = read_labels(tmp_path / "p.geojson")
    result = evaluate(*common_frame(pred, labels, None))
    assert result.overall.ap50 == pytest.approx(1.0)


def test_mixed_frames_without_scene_is_a_clear_error(tmp_path, fixtures):
    with pytest.raises(LabelReadError, match=r"on the map; pass scene=$"):
        common_frame(
            read_labels(fixtures / "OSBS_029.csv"),
            read_labels(fixtures / "geotiff_labels.geojson"),
            None,
        )


def test_cli_eval_json(capsys, fixtures):
    rc = main(["eval", str(fixtures / "OSBS_029.csv"), str(fixtures / "OSBS_029.csv"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and {"ap50", "ap50_95", "precision", "recall", "per_class"} <= set(out)
    assert out["per_class"]["Tree"]["ap50"] == 1.0


def test_eval_refuses_reading_options_without_a_scene(capsys, fixtures):
    labels = str(fixtures / "OSBS_029.csv")
    cases = ((["--asset", "visual"], "--asset"), (["--bands", "3,2,1"], "--bands"),
             (["--max-pixels", "10"], "--max-pixels"),
             (["--rpc-height", "50", "--asset", "a"], "--asset, --rpc-height"))  # fmt: skip
    for extra, flags in cases:
        assert main(["eval", labels, labels, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err == f"geo-hires: error: {flags} read(s) the scene: give it with --scene"


def test_cli_eval_table(tmp_path, capsys, fixtures):
    scene = str(fixtures / "OSBS_029.tif")
    assert (
        main(
            [
                "convert",
                str(fixtures / "OSBS_029.csv"),
                "--scene",
                scene,
                "-o",
                str(tmp_path / "t.geojson"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                str(tmp_path / "t.geojson"),
                str(fixtures / "OSBS_029.csv"),
                "--scene",
                scene,
                "--iou",
                "0.7",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[:3] == ["all", "1.000", "1.000"]


def _hand_case():
    """Two classes; every number below was computed by hand (see each assertion).

    car: truth T1, T2, T3. P1 = T1 (0.9, TP), P2 far away (0.8, FP), P3 on T2 with
    IoU 0.625 (0.7, TP up to IoU 0.6), P4 far away (0.1, FP); T3 is missed.
    plane: truth T4; P5 on it with IoU 0.82 (0.95, TP up to IoU 0.8).
    """
    from geo_hires.detections import PixelDetections

    truth = PixelDetections.build(
        [[0, 0, 50, 50], [100, 100, 200, 200], [400, 0, 450, 50], [300, 300, 400, 400]],
        [1.0] * 4,
        [0, 0, 0, 1],
        class_names=["car", "plane"],
    )
    pred = PixelDetections.build(
        [
            [0, 0, 50, 50],
            [600, 600, 650, 650],
            [100, 100, 200, 162.5],
            [700, 0, 750, 50],
            [300, 300, 400, 382],
        ],
        [0.9, 0.8, 0.7, 0.1, 0.95],
        [0, 0, 0, 0, 1],
        class_names=["car", "plane"],
    )
    return pred, truth


def test_evaluation_numbers_match_a_hand_computed_case():
    r = evaluate(*_hand_case())
    car, plane = r.per_class["car"], r.per_class["plane"]
    # car at IoU 0.5-0.6: ranked TP FP TP FP, recall 1/3 at precision 1, 2/3 at 2/3; COCO's
    # 101 recall points: 34 (r <= 1/3) at 1 and 33 (1/3 < r <= 2/3) at 2/3 -> 56/101.
    # At IoU >= 0.65 P3 is a FP too: 34 points at 1 -> 34/101. AP50:95 = (3*56 + 7*34) / 1010.
    assert car.ap50 == pytest.approx(56 / 101)
    assert car.ap50_95 == pytest.approx((3 * 56 + 7 * 34) / 1010)
    # plane: TP at IoU 0.5 ... 0.8 (7 of 10 thresholds), FP above
    assert plane.ap50 == pytest.approx(1.0) and plane.ap50_95 == pytest.approx(0.7)
    # best F1 per class: car after P3 (2 TP of 3 predictions, 2 of 3 truths); plane perfect
    assert (car.precision, car.recall, car.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (car.n_truth, car.n_pred, plane.n_truth, plane.n_pred) == (3, 4, 1, 1)
    assert (plane.precision, plane.recall) == (1.0, 1.0)
    # overall: classes averaged for AP; all five ranked by score for best F1:
    # P5 TP, P1 TP, P2 FP, P3 TP, P4 FP -> best after P3: 3 TP / 4 predictions, 3 / 4 truths
    o = r.overall
    assert o.ap50 == pytest.approx((56 / 101 + 1.0) / 2)
    assert o.ap50_95 == pytest.approx(((3 * 56 + 7 * 34) / 1010 + 0.7) / 2)
    assert (o.precision, o.recall) == pytest.approx((0.75, 0.75))
    # at IoU 0.7 P3 no longer matches: car's best F1 is right after P1 (1 of 1, 1 of 3)
    strict = evaluate(*_hand_case(), iou=0.7)
    assert (strict.per_class["car"].precision, strict.per_class["car"].recall) == pytest.approx(
        (1.0, 1 / 3)
    )
    assert (strict.overall.precision, strict.overall.recall) == pytest.approx((1.0, 0.5))


def test_boxes_enter_coco_as_x_y_width_height():
    """IoU 2/3 along x only: a TP at 0.5-0.65 and a FP above, if COCO gets the right boxes."""
    from geo_hires.detections import PixelDetections

    truth = PixelDetections.build([[100, 10, 200, 60]], [1.0], [0], class_names=["car"])
    pred = PixelDetections.build([[120, 10, 220, 60]], [0.9], [0], class_names=["car"])
    r = evaluate(pred, truth)
    assert r.overall.ap50 == pytest.approx(1.0)
    assert r.overall.ap50_95 == pytest.approx(4 / 10)  # thresholds 0.5, 0.55, 0.6, 0.65
    shifted_y = PixelDetections.build([[100, 30, 200, 80]], [0.9], [0], class_names=["car"])
    assert evaluate(shifted_y, truth).overall.ap50 == 0.0  # IoU 0.43 along y


def test_nothing_predicted_and_nothing_to_find_score_zero():
    from geo_hires.detections import PixelDetections

    truth = PixelDetections.build([[0, 0, 10, 10]], [1.0], [0], class_names=["car"])
    none = PixelDetections.empty(("car",))
    missed = evaluate(none, truth).overall
    assert (missed.ap50, missed.ap50_95, missed.precision, missed.recall) == (0.0, 0.0, 0.0, 0.0)
    assert (missed.n_truth, missed.n_pred, missed.f1) == (1, 0, 0.0)
    spurious = evaluate(truth, none).overall  # predictions where nothing is labelled
    assert (spurious.ap50, spurious.precision, spurious.recall) == (0.0, 0.0, 0.0)
    assert (spurious.n_truth, spurious.n_pred) == (0, 1)


def _cars(boxes, scores=None):
    from geo_hires.detections import PixelDetections

    return PixelDetections.build(
        boxes, scores or [1.0] * len(boxes), [0] * len(boxes), class_names=["car"]
    )


def test_best_f1_below_one_and_off_grid_iou():
    truth = _cars([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10]])
    # two misses ranked first, then a hit: the only non-zero F1 is at p = r = 1/3
    pred = _cars([[500, 0, 510, 10], [600, 0, 610, 10], [0, 0, 10, 10]], [0.9, 0.8, 0.7])
    s = evaluate(pred, truth).overall
    assert (s.precision, s.recall, s.f1) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    only_wrong = evaluate(_cars([[500, 0, 510, 10]], [0.9]), truth).overall
    assert (only_wrong.precision, only_wrong.recall, only_wrong.f1) == (0.0, 0.0, 0.0)
    # IoU 0.4: a match at --iou 0.3 (not one of COCO's ten thresholds), a miss at 0.5
    loose = _cars([[0, 0, 10, 4]], [0.9])
    assert evaluate(loose, _cars([[0, 0, 10, 10]]), iou=0.3).overall.recall == 1
    assert evaluate(loose, _cars([[0, 0, 10, 10]])).overall.recall == 0


def test_evaluation_bounds_extra_classes_and_json():
    pred, truth = _hand_case()
    from geo_hires.detections import PixelDetections

    with_boat = PixelDetections.build(
        [*pred.boxes.tolist(), [900, 900, 950, 950]],
        [*pred.scores.tolist(), 0.99],
        [*pred.classes.tolist(), 2],
        class_names=["car", "plane", "boat"],
    )
    r = evaluate(with_boat, truth)
    # the boat is a false positive ranked first: best F1 after P3 is now 3 TP of 5
    assert (r.overall.precision, r.overall.recall) == pytest.approx((0.6, 0.75))
    assert set(r.per_class) == {"car", "plane"}  # classes without truth get no row
    assert r.as_json()["iou"] == 0.5 and evaluate(pred, truth, iou=0.95).iou == 0.95
    evaluate(pred, truth, iou=0.05)
    for bad in (0.04, 0.96):
        with pytest.raises(ConfigError, match=r"^iou must be in"):
            evaluate(pred, truth, iou=bad)
    for bad in (5.0, -0.1, float("nan")):  # scored 0 precision and recall without a word
        with pytest.raises(ConfigError, match="a detection score, in"):
            evaluate(pred, truth, threshold=bad)
    assert evaluate(pred, truth, threshold=1.0).operating is not None
    from geo_hires.evaluate import evaluate_images

    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate_images([])


def test_eval_renames_the_truths_classes_and_warns_when_none_match(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("xmin,ymin,xmax,ymax,label,score\n0,0,10,10,Airplane,0.9\n")
    (tmp_path / "t.csv").write_text("xmin,ymin,xmax,ymax,label\n0,0,10,10,Truncated_airplane\n")
    files = [str(tmp_path / "p.csv"), str(tmp_path / "t.csv"), "--json"]
    assert main(["eval", *files]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ap50"] == 0.0
    assert "share none, so every score is 0; rename the truth's with --class-map" in captured.err
    assert main(["eval", *files, "--class-map", "Truncated_airplane=Airplane"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ap50"] == pytest.approx(1.0)
    assert "share none" not in captured.err


def test_ties_thresholds_and_the_polar_frame():
    """Best F1 only where a score threshold can stop; ``--iou`` as given (0.551 was rounded
    to 0.55); labels beyond UTM's latitudes compared in UPS (was an IndexError)."""
    truth = _cars([[0, 0, 10, 10]])
    tied = evaluate(_cars([[0, 0, 10, 10], [50, 0, 60, 10]], [0.9, 0.9]), truth).overall
    assert (tied.precision, tied.recall) == (0.5, 1.0)  # not 1.0: 0.9 keeps both
    two = _cars([[0, 0, 10, 10], [100, 0, 110, 10]])  # a tie after the first score: same rule
    later = _cars([[0, 0, 10, 10], [100, 0, 110, 10], [50, 0, 60, 10]], [0.95, 0.9, 0.9])
    assert (evaluate(later, two).overall.precision, evaluate(later, two).overall.recall) == (
        pytest.approx(2 / 3), 1.0)  # fmt: skip
    near = _cars([[0, 0, 5.505, 10]], [0.9])  # IoU 0.5505: a hit at 0.55, a miss at 0.551
    assert evaluate(near, truth, iou=0.55).overall.recall == 1
    assert evaluate(near, truth, iou=0.551).overall.recall == 0
    from geo_hires.evaluate.frames import local_utm
    from geo_hires.labels import LabelSet

    ring = np.array([[10.0, 86.0], [10.01, 86.0], [10.01, 86.01], [10.0, 86.01]])
    north = LabelSet(rings=(ring,), names=("x",), scores=(1.0,), crs="EPSG:4326")
    assert local_utm(north).to_epsg() == 32661
    south = LabelSet(rings=(ring * [1, -1],), names=("x",), scores=(1.0,), crs="EPSG:4326")
    assert local_utm(south).to_epsg() == 32761


def test_eval_says_when_the_truth_has_nothing_to_find(tmp_path, capsys, fixtures):
    (tmp_path / "p.csv").write_text("xmin,ymin,xmax,ymax,label,score\n0,0,10,10,Tree,0.9\n")
    (tmp_path / "t.csv").write_text("xmin,ymin,xmax,ymax,label\n900,0,910,10,Tree\n")
    scene = ["--scene", str(fixtures / "OSBS_029.tif")]
    assert main(["eval", str(tmp_path / "p.csv"), str(tmp_path / "t.csv"), *scene]) == 0
    assert "nothing to find (its 1 objects lie off the scene)" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\nother.tif,0,0,9,9,Tree\n"
    )
    assert main(["eval", str(tmp_path / "p.csv"), str(tmp_path / "t.csv"), *scene]) == 0
    assert "it names no object of OSBS_029.tif" in capsys.readouterr().err
    (tmp_path / "none.csv").write_text("xmin,ymin,xmax,ymax,label\n")
    assert main(["eval", str(tmp_path / "p.csv"), str(tmp_path / "none.csv")]) == 0
    assert "nothing to find (it holds no object)" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "p.csv"), str(tmp_path / "p.csv")]) == 0
    assert "nothing to find" not in capsys.readouterr().err  # truth and predictions: no word
