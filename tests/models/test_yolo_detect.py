"""A tiny YOLO trained for a few steps in the suite, run by ``detect`` as a level and as a
cascade refiner: local and Ray byte-identical, resumable, the refiner gated by the scanner."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geo_hires.cli import main
from geo_hires.detect.journal import journal_for
from geo_hires.detect.options import DetectConfig
from geo_hires.errors import ConfigError
from geo_hires.evaluate import evaluate_scenes
from geo_hires.export import write_geojson
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.models.card import CascadeRule, Level, load_card
from geo_hires.pipeline import detect_scene
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
from geo_hires.train import ChipSampler, FitConfig
from geo_hires.train.cascade import make_cascade_bundle
from geo_hires.train.run import TrainJob, train_bundle
from geo_hires.train.yolo_data import YoloDataConfig
from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle

CFG = DetectConfig(core=256, batch_size=2, score_threshold=0.002)  # a tiny, barely trained YOLO


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """A tiny YOLO bundle (whole-scene windows), a tiny LSN, and their cascade."""
    root = tmp_path_factory.mktemp("yolo-detect")
    scenes = []
    (root / "labels").mkdir()
    for seed in range(3):
        path = root / f"s{seed}.tif"
        spec = SynthSpec(width=512, height=512, seed=seed, density=Density.DENSE)
        write_geojson(root / "labels" / f"s{seed}.geojson", write_synthetic(path, spec),
                      open_scene(path))  # fmt: skip
        scenes.append(str(path))
    job = TrainJob(
        scenes=tuple(scenes), labels=str(root / "labels"), out=str(root / "yolo"), name="tiny_yolo",
        val_fraction=0.34, fit=FitConfig(steps=40, minutes=1, batch_size=8, lr=5e-3, seed=0),
        sampler=ChipSampler(chip=128, scale_range=(0.5, 1.0)),
        levels=(
            Level(name="full", target_gsd_m=0.5, downsample=1, max_size=40.0),
            Level(name="coarse", target_gsd_m=1.0, downsample=2, min_size=15.0),
        ),
    )  # fmt: skip
    cfg = YoloTrainConfig(
        arch="yolov8n", minutes=0.25, batch=8, window=256, halo=48,
        data=YoloDataConfig(chip=128, chips_per_image=8),
    )  # fmt: skip
    train_yolo_bundle(job, cfg, evaluate=evaluate_scenes, log=lambda _s: None)
    lsn = dataclasses.replace(job, out=str(root / "lsn"), name="tiny_lsn")
    train_bundle(lsn, log=lambda _s: None)
    make_cascade_bundle(
        root / "lsn", root / "yolo", root / "cascade", name="tiny_cascade",
        rule=CascadeRule(detector="x", window=128, gate_threshold=0.2, margin=8),
    )  # fmt: skip
    return {"yolo": root / "yolo", "lsn": root / "lsn", "cascade": root / "cascade",
            "val": Path(scenes[0]).parent, "root": root}  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("yolo-scene") / "scene.tif"
    write_synthetic(path, SynthSpec(width=900, height=700, seed=5, density=Density.DENSE))
    return path


def test_training_writes_a_card_with_our_metrics_and_the_refiner(bundles):
    card = load_card(bundles["yolo"])
    assert card.arch is None and card.yolo_files == ("yolo.pt",)
    assert card.levels[0].detector == "yolo.pt" and card.levels[0].window == 256
    assert card.classes == ("aircraft", "vehicle")
    metrics = card.extra["metrics"]  # ours, through detect, on the held-out image
    assert metrics["images"] == 1 and metrics["n_truth"] > 0 and 0.0 <= metrics["ap50"] <= 1.0
    assert card.extra["training"]["report"]["epochs"] >= 1
    cascade = load_card(bundles["cascade"])
    assert cascade.cascade is not None and cascade.cascade.detector == "yolo.pt"
    assert cascade.arch == load_card(bundles["lsn"]).arch and cascade.name == "tiny_cascade"


def _bytes(result: Any, scene: Any, path: Path) -> bytes:
    write_geojson(path, result.detections, scene)
    return path.read_bytes()


@pytest.mark.ray
@pytest.mark.parametrize("name", ["yolo", "cascade"])
def test_local_and_ray_give_the_same_bytes(bundles, scene, local_equals_ray, name):
    local = local_equals_ray(open_scene(scene), load_bundle(bundles[name]), CFG)
    assert len(local.detections) > 0


class _Recording:
    """The real ultralytics model, with a record of every image it was given."""

    def __init__(self, model: Any) -> None:
        self.model, self.shapes = model, []

    def predict(self, images: Any, **kw: Any) -> Any:
        self.shapes += [im.shape[:2] for im in images]
        return self.model.predict(images, **kw)


def test_the_refiner_sees_only_windows_around_candidates(bundles, tmp_path):
    scene = tmp_path / "sparse.tif"
    write_synthetic(scene, SynthSpec(width=1500, height=1200, seed=3, density=Density.SPARSE))
    model = load_bundle(bundles["cascade"])
    card = model.card
    rec = _Recording(model.yolo["yolo.pt"])
    gated = dataclasses.replace(model, yolo={"yolo.pt": rec})
    s = open_scene(scene)
    result = detect_scene(s, gated, config=CFG)
    scanner = dataclasses.replace(card, cascade=None)
    lsn = detect_scene(s, dataclasses.replace(model, card=scanner),
                       config=dataclasses.replace(CFG, score_threshold=0.2))  # fmt: skip
    refine = result.levels[-1]
    assert refine.name == "refine" and refine.blocks == len(rec.shapes) > 0
    assert sum(h * w for h, w in rec.shapes) == refine.pixels_scanned < s.pixels
    for x0, y0, x1, y1 in refine.cores:  # every window holds a candidate's centre
        c = lsn.detections.boxes
        cx, cy = (c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2
        assert ((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)).any()


def test_cascade_resumes_from_its_journal(bundles, scene, tmp_path):
    model = load_bundle(bundles["cascade"])
    s = open_scene(scene)
    journal = journal_for(tmp_path / "out.geojson", s, model, CFG)
    first = detect_scene(s, model, config=CFG, journal=journal)
    keys = set(journal.start(resume=True))
    assert any(k.startswith("R-U") for k in keys) and any(k.startswith("L0-") for k in keys)
    again = detect_scene(s, model, config=CFG, journal=journal, resume=True)
    assert again.resumed_units == len(keys)
    assert np.array_equal(first.detections.boxes, again.detections.boxes)


def test_detect_cli_runs_a_yolo_bundle_and_records_the_level(bundles, scene, tmp_path, capsys):
    out = tmp_path / "d.geojson"
    assert main(["detect", str(scene), "-o", str(out), "--model", str(bundles["yolo"])]) == 0
    doc = json.loads(out.read_text())
    assert doc["geo_hires"]["model"] == "tiny_yolo"
    assert {f["properties"]["level"] for f in doc["features"]} <= {"full"}


def test_bad_bundles_are_refused_with_what_to_change(bundles, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundles["yolo"], broken)
    (broken / "yolo.pt").unlink()
    with pytest.raises(ConfigError, match=r"needs .yolo\.pt., which is not in the folder"):
        load_bundle(broken)
    with pytest.raises(ConfigError, match="give 'window'"):
        Level(name="full", target_gsd_m=0.5, downsample=1, detector="y.pt")
    with pytest.raises(ConfigError, match="gate_threshold"):
        CascadeRule(detector="y.pt", gate_threshold=0.0)
    card = json.loads((bundles["yolo"] / "card.json").read_text())
    card["classes"] = ["car"]
    (broken / "card.json").write_text(json.dumps(card))
    shutil.copy(bundles["yolo"] / "yolo.pt", broken / "yolo.pt")
    with pytest.raises(ConfigError, match="fix the card's 'classes'"):
        load_bundle(broken)
    with pytest.raises(ConfigError, match="no scanning network"):
        Bundle(card=load_card(bundles["yolo"]), fcn=None).network()


def test_a_bare_pt_runs_with_its_gsd_and_names_from_the_model(bundles, scene, tmp_path, capsys):
    pt, out = str(bundles["yolo"] / "yolo.pt"), tmp_path / "bare.geojson"
    assert main(["detect", str(scene), "-o", str(out), "--model", pt]) == 2
    assert "a bare .pt needs --model-gsd" in capsys.readouterr().err
    args = ["--model-gsd", "0.5", "--window", "256", "--score-threshold", "0.002"]
    assert main(["detect", str(scene), "-o", str(out), "--model", pt, *args]) == 0
    doc = json.loads(out.read_text())
    assert doc["geo_hires"]["model"] == "yolo" and doc["features"]
    assert {f["properties"]["class"] for f in doc["features"]} <= {"aircraft", "vehicle"}
