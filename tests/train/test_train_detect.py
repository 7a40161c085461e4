"""A tiny scanner trained for a few steps in the suite, then run end to end by ``detect``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geo_hires.cli import main
from geo_hires.detect.options import DetectConfig
from geo_hires.models.arch import lsn_spec
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import Level
from geo_hires.models.codec import decode_peaks, encode_targets
from geo_hires.pipeline import detect_scene
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
from geo_hires.train import ChipSampler, FitConfig, centernet_loss
from geo_hires.train.run import TrainJob, train_bundle

LEVELS = (
    Level(name="full", target_gsd_m=0.5, downsample=1, max_size=40.0),
    Level(name="coarse", target_gsd_m=1.0, downsample=2, min_size=15.0),
)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    scenes = []
    for seed in range(3):
        path = root / f"s{seed}.tif"
        truth = write_synthetic(
            path, SynthSpec(width=640, height=640, seed=seed, density=Density.DENSE)
        )
        from geo_hires.export import write_geojson

        (root / "labels").mkdir(exist_ok=True)
        write_geojson(root / "labels" / f"s{seed}.geojson", truth, open_scene(path))
        scenes.append(str(path))
    job = TrainJob(
        scenes=tuple(scenes),
        labels=str(root / "labels"),
        out=str(root / "bundle"),
        name="tiny",
        val_fraction=0.34,
        levels=LEVELS,
        sampler=ChipSampler(chip=128, scale_range=(0.5, 1.0)),
        fit=FitConfig(steps=40, minutes=2, batch_size=8, lr=5e-3),
    )
    from geo_hires.evaluate import evaluate_scenes

    train_bundle(job, evaluate=evaluate_scenes, log=lambda _s: None)
    return root / "bundle"


def test_a_scene_at_another_gsd_is_trained_on_at_the_bundles(tmp_path):
    """A scanner learns objects at the size its levels will show them: a 0.25 m scene is
    halved for a 0.5 m bundle (as for a YOLO), and the card says so."""
    from geo_hires.export import write_geojson

    scenes = []
    for name, gsd in (("fine.tif", 0.25), ("usual.tif", 0.5), ("held.tif", 0.5)):
        path = tmp_path / name
        spec = SynthSpec(width=256, height=256, seed=len(scenes), density=Density.DENSE, gsd_m=gsd)
        write_geojson(tmp_path / f"{path.stem}.geojson", write_synthetic(path, spec),
                      open_scene(path))  # fmt: skip
        scenes.append(str(path))
    job = TrainJob(
        scenes=tuple(scenes), labels=str(tmp_path), out=str(tmp_path / "bundle"), name="g",
        val_fraction=0.34, levels=LEVELS, sampler=ChipSampler(chip=64),
        fit=FitConfig(steps=2, minutes=1, batch_size=2),
    )  # fmt: skip
    train_bundle(job, evaluate=None, log=lambda _s: None)
    training = json.loads((tmp_path / "bundle" / "card.json").read_text())["training"]
    assert training["resampled"] == {"fine.tif": 0.5}


def test_codec_round_trip():
    boxes = np.array([[10.0, 20.0, 50.0, 44.0], [100.0, 3.0, 113.0, 30.0]])
    t = encode_targets(boxes, np.array([0, 1]), out_hw=(32, 32), num_classes=2, stride=4)
    out = torch.zeros(6, 32, 32) - 10
    heat = torch.from_numpy(t["heat"])
    out[:2] = torch.logit(heat.clamp(1e-4, 1 - 1e-4))
    out[2:] = torch.from_numpy(t["reg"])
    dec, _, cls = decode_peaks(
        out, num_classes=2, stride=4, origin=(0, 0), keep=(0, 32, 0, 32), threshold=0.9
    )
    order = np.argsort(cls)
    np.testing.assert_allclose(dec[order], boxes, atol=1e-4)


def test_loss_is_finite_and_falls_for_a_perfect_prediction():
    boxes = np.array([[10.0, 20.0, 50.0, 44.0]])
    t = encode_targets(boxes, np.array([0]), out_hw=(16, 16), num_classes=1, stride=4)
    heat, reg, mask = (torch.from_numpy(t[k])[None] for k in ("heat", "reg", "mask"))
    bad = torch.zeros(1, 5, 16, 16)
    good = torch.cat([torch.logit(heat.clamp(1e-4, 1 - 1e-4)), reg], 1)
    assert centernet_loss(good, heat, reg, mask) < centernet_loss(bad, heat, reg, mask)


def test_training_writes_bundle_with_card(tiny_bundle):
    card = json.loads((tiny_bundle / "card.json").read_text())
    assert card["name"] == "tiny" and card["classes"] == ["aircraft", "vehicle"]
    assert [lv["name"] for lv in card["levels"]] == ["full", "coarse"]
    m = card["metrics"]
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["arithmetic"] == "fp32"
    assert card["training"]["val_images"] and not set(card["training"]["val_images"]) & set(
        card["training"]["train_images"]
    )
    assert card["training"]["report"]["steps"] == 40
    assert {"ap50", "precision", "recall"} <= set(card["metrics"])
    model = load_bundle(tiny_bundle)
    loaded = model.card
    assert loaded.arch == lsn_spec(2) and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.fcn.modules()
    )


def test_detect_cli_end_to_end(tiny_bundle, tmp_path, capsys):
    scene = tmp_path / "scene.tif"
    write_synthetic(scene, SynthSpec(width=900, height=700, seed=11, nodata=True))
    out = tmp_path / "d.geojson"
    rc = main(
        [
            "detect",
            str(scene),
            "-o",
            str(out),
            "--model",
            str(tiny_bundle),
            "--gpkg",
            str(tmp_path / "d.gpkg"),
            "--quicklook",
            str(tmp_path / "d.png"),
            "--score-threshold",
            "0.05",
            "--block",
            "256",
        ]
    )
    summary = capsys.readouterr().out
    assert rc == 0 and "windows" in summary and "MP/s" in summary
    doc = json.loads(out.read_text())
    assert doc["geo_hires"]["model"] == "tiny" and [
        lv["downsample"] for lv in doc["geo_hires"]["levels"]
    ] == [1, 2]
    assert (tmp_path / "d.gpkg").exists() and (tmp_path / "d.png").exists()
    # same input and config → byte-identical GeoJSON
    assert (
        main(
            [
                "detect",
                str(scene),
                "-o",
                str(tmp_path / "e.geojson"),
                "--model",
                str(tiny_bundle),
                "--score-threshold",
                "0.05",
                "--block",
                "256",
            ]
        )
        == 0
    )
    assert out.read_bytes() == (tmp_path / "e.geojson").read_bytes()


def test_block_size_does_not_change_detections(tiny_bundle, tmp_path):
    scene_path = tmp_path / "scene.tif"
    write_synthetic(scene_path, SynthSpec(width=700, height=500, seed=12, density=Density.DENSE))
    model = load_bundle(tiny_bundle)
    scene = open_scene(scene_path)
    a = detect_scene(scene, model, config=DetectConfig(core=128, score_threshold=0.05))
    b = detect_scene(
        scene, model, config=DetectConfig(core=512, score_threshold=0.05, batch_size=1)
    )
    assert a.blocks > b.blocks
    np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=1e-3)


def test_all_nodata_scene_gives_empty_collection(tiny_bundle, tmp_path, write_tif, capsys):
    path = write_tif("nd.tif", np.zeros((3, 400, 500), np.uint8), nodata=0)
    assert (
        main(["detect", str(path), "-o", str(tmp_path / "e.geojson"), "--model", str(tiny_bundle)])
        == 0
    )
    assert "nd.tif: 0 windows [full: 0 of 1 blocks (x1), coarse: 0 of 1" in capsys.readouterr().out
    doc = json.loads((tmp_path / "e.geojson").read_text())
    assert doc["features"] == [] and all(lv["blocks"] >= 1 for lv in doc["geo_hires"]["levels"])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scene_without_crs_is_detected_in_pixels(tiny_bundle, tmp_path):
    src = tmp_path / "g.tif"
    write_synthetic(src, SynthSpec(width=300, height=300, seed=2))
    with rasterio.open(src) as s:
        data = s.read()
    png = tmp_path / "plain.png"
    with rasterio.open(
        png, "w", driver="PNG", width=300, height=300, count=3, dtype="uint8"
    ) as dst:
        dst.write(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(
                ["detect", str(png), "-o", str(tmp_path / "p.geojson"), "--model", str(tiny_bundle)]
            )
            == 0
        )
    assert json.loads((tmp_path / "p.geojson").read_text())["geo_hires"]["pixel_space"] is True


def test_unknown_model_is_a_clear_error(tmp_path, capsys, fixtures):
    rc = main(
        [
            "detect",
            str(fixtures / "OSBS_029.tif"),
            "-o",
            str(tmp_path / "x.geojson"),
            "--model",
            "nope",
        ]
    )
    assert rc == 2 and "model 'nope' not found" in capsys.readouterr().err


def test_detect_levels_option(tiny_bundle, tmp_path, capsys):
    scene = tmp_path / "scene.tif"
    write_synthetic(scene, SynthSpec(width=600, height=500, seed=13, density=Density.DENSE))
    out = tmp_path / "c.geojson"
    args = ["detect", str(scene), "-o", str(out), "--model", str(tiny_bundle)]
    assert main([*args, "--levels", "coarse", "--score-threshold", "0.05"]) == 0
    doc = json.loads(out.read_text())
    assert [lv["name"] for lv in doc["geo_hires"]["levels"]] == ["coarse"]
    assert doc["features"] and {f["properties"]["level"] for f in doc["features"]} == {"coarse"}
    capsys.readouterr()
    assert main([*args, "--levels", "full,nope"]) == 2
    assert "has no level 'nope'" in capsys.readouterr().err
