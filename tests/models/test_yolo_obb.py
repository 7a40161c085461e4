"""Oriented boxes: a tiny YOLO-OBB trained in the suite on the DOTA image's oriented labels,
run by ``detect``; rotated polygons with heading and size measured on the map; rotated NMS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Transformer

from geo_hires.detect.options import DetectConfig
from geo_hires.detections import PixelDetections
from geo_hires.georef import oriented_dimensions
from geo_hires.merge import nms
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene, run_detect
from geo_hires.scene import open_scene
from geo_hires.train import FitConfig
from geo_hires.train.run import TrainJob
from geo_hires.train.yolo_data import YoloDataConfig
from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle

CFG = DetectConfig(core=256, batch_size=2, score_threshold=0.002)  # a barely trained model
GSD = 0.266  # the DOTA image's, from its label file
UTM = CRS.from_epsg(32633)


def _tif(path: Path, pixels: np.ndarray, transform: Affine) -> Path:
    profile = {"driver": "GTiff", "width": pixels.shape[2], "height": pixels.shape[1],
               "count": 3, "dtype": "uint8", "crs": UTM, "transform": transform}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


def _rotated(angle_deg: float) -> Affine:
    return (
        Affine.translation(500_000, 5_000_000)
        @ Affine.rotation(-angle_deg)
        @ Affine.scale(GSD, -GSD)
    )


@pytest.fixture(scope="module")
def dota(shared) -> tuple[np.ndarray, list[str]]:
    folder = shared / "vehicles"
    with rasterio.open(folder / "P1888.png") as src:
        pixels = src.read()[:3]
    lines = [ln for ln in (folder / "P1888.txt").read_text().splitlines() if len(ln.split()) >= 9]
    return pixels, lines


@pytest.fixture(scope="module")
def obb_bundle(dota, tmp_path_factory) -> Path:
    """YOLOv8n-OBB from its yaml, trained ~15 s on thirds of the DOTA image (one fitted, one
    picks the best epoch, one validates)."""
    pixels, lines = dota
    root = tmp_path_factory.mktemp("obb")
    (root / "labels").mkdir()
    scenes = []
    third = pixels.shape[2] // 3
    for k, x0 in enumerate((0, third, 2 * third)):
        path = _tif(root / f"third{k}.tif", pixels[:, :, x0 : x0 + third],
                    _rotated(0.0) @ Affine.translation(x0, 0))  # fmt: skip
        rows = []
        for ln in lines:
            p = ln.split()
            q = np.asarray(p[:8], float).reshape(4, 2) - [x0, 0]
            if 0 <= q[:, 0].mean() < third:
                rows.append(" ".join(f"{v:.1f}" for v in q.reshape(-1)) + f" {p[8]} 0")
        (root / "labels" / f"third{k}.txt").write_text("\n".join(rows) + "\n")
        scenes.append(str(path))
    job = TrainJob(scenes=tuple(scenes), labels=str(root / "labels"), out=str(root / "bundle"),
                   name="tiny_obb", gsd_m=GSD, val_fraction=0.34,
                   fit=FitConfig(seed=0))  # fmt: skip
    cfg = YoloTrainConfig(arch="yolov8n-obb", minutes=0.25, batch=8, window=256, halo=48,
                          data=YoloDataConfig(chip=128))  # fmt: skip
    train_yolo_bundle(job, cfg, log=lambda _s: None)
    return root / "bundle"


def test_an_obb_card_records_the_grid_it_trained_on_and_the_cli_refuses_ignored_options(
    obb_bundle, tmp_path, capsys
):
    from geo_hires.cli import main

    card = json.loads((obb_bundle / "card.json").read_text())
    assert card["training"]["yolo"]["data"] == {
        "chip": 128, "sampling": "half-overlapping grid, data's own GSD"}  # fmt: skip
    scene = tmp_path / "s.tif"
    scene.write_bytes(b"")  # refused before it is read
    common = [str(scene), "--labels", str(tmp_path), "--out", str(tmp_path / "b"),
              "--arch", "yolov8n-obb"]  # fmt: skip
    for extra, flags in ((["--chips-per-image", "8"], "--chips-per-image"),
                         (["--gsd-range", "0.5", "1"], "--gsd-range"),
                         (["--chips-per-image", "8", "--gsd-range", "0", "0"],
                          "--chips-per-image, --gsd-range")):  # fmt: skip
        assert main(["train", *common, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"geo-hires: error: {flags}: an -obb model trains on a grid"), err
    assert not (tmp_path / "b").exists()


def test_obb_detections_are_rotated_polygons_measured_on_the_map(obb_bundle, dota, tmp_path):
    pixels, _ = dota
    north = _tif(tmp_path / "north.tif", pixels, _rotated(0.0))
    turned = _tif(tmp_path / "turned.tif", pixels, _rotated(30.0))
    docs = []
    for scene in (north, turned):
        out = tmp_path / f"{scene.stem}.geojson"
        run_detect(scene, out, bundle=load_bundle(obb_bundle), config=CFG)
        docs.append(json.loads(out.read_text())["features"])
    assert docs[0] and len(docs[0]) == len(docs[1])
    for a, b in zip(docs[0], docs[1], strict=True):
        pa, pb = a["properties"], b["properties"]
        assert pa["length_m"] >= pa["width_m"] > 0
        assert abs(pa["length_m"] - pb["length_m"]) < 0.02  # the same object, measured in metres
        turn = (pb["heading_deg"] - pa["heading_deg"]) % 180  # the scene turned 30° clockwise
        assert min(abs(turn - 30), 180 - abs(turn - 30)) < 0.2
        assert len(a["geometry"]["coordinates"][0]) == 5  # a closed 4-corner ring
    # in pixels, a north-up box's long side is its length over the GSD
    scene = open_scene(north)
    dets = detect_scene(scene, load_bundle(obb_bundle), config=CFG).detections
    assert dets.corners is not None
    c = dets.corners
    sides = np.stack([np.hypot(*(c[:, 1] - c[:, 0]).T), np.hypot(*(c[:, 2] - c[:, 1]).T)], 1)
    lengths = sorted(f["properties"]["length_m"] for f in docs[0])
    assert np.allclose(sorted(sides.max(1) * GSD), lengths, atol=0.01)


@pytest.mark.ray
def test_obb_local_and_ray_give_the_same_bytes(obb_bundle, dota, tmp_path, local_equals_ray):
    scene = _tif(tmp_path / "s.tif", dota[0], _rotated(0.0))
    local = local_equals_ray(open_scene(scene), load_bundle(obb_bundle), CFG)
    assert len(local.detections) > 0 and local.detections.corners is not None


def _bar(cx: float, cy: float, length: float, width: float, angle_deg: float) -> np.ndarray:
    t = np.radians(angle_deg)
    u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    h, w = length / 2, width / 2
    return np.array([[cx, cy] + s * h * u + r * w * v for s, r in
                     ((-1, -1), (1, -1), (1, 1), (-1, 1))])  # fmt: skip


def test_rotated_nms_keeps_crossing_boxes_that_envelopes_would_merge():
    cross = [_bar(50, 50, 60, 6, 45), _bar(50, 50, 60, 6, -45), _bar(50, 50, 60, 6, 44)]
    dets = PixelDetections.oriented(np.stack(cross), [0.9, 0.8, 0.7], [0, 0, 0],
                                    class_names=["car"])  # fmt: skip
    kept = nms(dets)
    # the X's two bars overlap little (IoU ~0.05) although their envelopes coincide; the third
    # bar duplicates the first and goes
    assert sorted(kept.scores.tolist()) == [0.8, 0.9]
    axis = nms(PixelDetections.build(dets.boxes, dets.scores, dets.classes, class_names=["car"]))
    assert len(axis) == 1  # what axis-aligned NMS would have done


def test_heading_and_size_agree_in_utm_and_in_lon_lat():
    box = _bar(500_000, 5_000_000, 12.0, 4.0, 90 - 30)  # long side 30° east of north
    dims_utm = oriented_dimensions(box[None], UTM)[0]
    to_ll = Transformer.from_crs(UTM, 4326, always_xy=True)
    lon, lat = to_ll.transform(box[:, 0], box[:, 1])
    dims_ll = oriented_dimensions(np.stack([lon, lat], 1)[None], CRS.from_epsg(4326))[0]
    assert np.allclose(dims_utm, [30.0, 12.0, 4.0], atol=1e-6)
    assert abs(dims_ll[1] - 12.0) < 0.02 and abs(dims_ll[2] - 4.0) < 0.01
    # grid north vs true north differ by the meridian convergence (~0.7° here, 15°E at 45°N)
    assert abs(dims_ll[0] - 30.0) < 1.5
