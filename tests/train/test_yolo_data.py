"""Chips for ultralytics: images, normalised YOLO labels that match the boxes, a data.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from geo_hires.errors import ConfigError
from geo_hires.train.chips import LabelledImage
from geo_hires.train.yolo_data import YoloDataConfig, export_yolo_dataset


def _item(name: str, boxes: list[list[float]]) -> LabelledImage:
    img = torch.zeros((3, 600, 600), dtype=torch.uint8)
    for x0, y0, x1, y1 in boxes:  # bright objects on black, so labels can be checked on pixels
        img[:, int(y0) : int(y1), int(x0) : int(x1)] = 255
    return LabelledImage(
        name=name,
        image=img,
        boxes=np.array(boxes, float).reshape(-1, 4),
        classes=np.zeros(len(boxes), np.int64),
    )


def test_export_writes_chips_whose_labels_cover_the_objects(tmp_path):
    train = [_item("a.jpg", [[100, 100, 160, 140], [400, 300, 470, 380]])]
    val = [_item("b.jpg", [[200, 200, 260, 250]])]
    cfg = YoloDataConfig(chip=128, chips_per_image=10, seed=3)
    data = export_yolo_dataset(train, val, ["Airplane"], tmp_path / "ds", config=cfg)
    doc = yaml.safe_load(data.read_text())
    assert doc["names"] == {0: "Airplane"} and doc["train"] == "train/images"
    images = sorted((tmp_path / "ds" / "train" / "images").iterdir())
    assert len(images) == 10 and len(list((tmp_path / "ds" / "val" / "images").iterdir())) == 5
    labelled = 0
    for png in images:
        pixels = np.asarray(Image.open(png))
        assert pixels.shape == (128, 128, 3)
        rows = (png.parent.parent / "labels" / f"{png.stem}.txt").read_text().split("\n")
        for row in filter(None, rows):
            c, cx, cy, w, h = map(float, row.split())
            assert c == 0 and w > 0 and h > 0
            assert cx - w / 2 >= -1e-5 and cx + w / 2 <= 1 + 1e-5  # 6 decimals
            x, y = int(cx * 128), int(cy * 128)
            assert pixels[y, x].mean() > 200  # the box centre is on the bright object
            labelled += 1
    assert labelled >= 5  # most chips are drawn around objects
    again = export_yolo_dataset(train, val, ["Airplane"], tmp_path / "ds2", config=cfg)
    assert (again.parent / "train" / "labels" / "a_0003.txt").read_text() == (
        tmp_path / "ds" / "train" / "labels" / "a_0003.txt"
    ).read_text()  # seeded: the same dataset


def test_bad_dataset_requests_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        YoloDataConfig(chip=100)
    with pytest.raises(ConfigError, match="split by image"):
        export_yolo_dataset([_item("a.jpg", [])], [], ["x"], tmp_path)


def test_scenes_are_resampled_to_the_training_gsd(tmp_path):
    from geo_hires.export import write_geojson
    from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
    from geo_hires.train.chips import load_labelled

    path = tmp_path / "fine.tif"
    spec = SynthSpec(width=400, height=300, seed=2, density=Density.DENSE, gsd_m=0.25)
    truth = write_synthetic(path, spec)
    write_geojson(tmp_path / "fine.geojson", truth, open_scene(path))
    (same,), _ = load_labelled([path], tmp_path / "fine.geojson", gsd_m=0.26)  # within 5 %
    (half,), _ = load_labelled([path], tmp_path / "fine.geojson", gsd_m=0.5)
    assert tuple(same.image.shape) == (3, 300, 400) and tuple(half.image.shape) == (3, 150, 200)
    np.testing.assert_allclose(half.boxes, same.boxes / 2, atol=1e-6)


def _square_chip(size: int = 128) -> torch.Tensor:
    """Fine texture (seeded noise) with a 20 px bright square object."""
    chip = torch.rand((3, size, size), generator=torch.Generator().manual_seed(0)) * 0.4
    chip[:, 20:40, 20:40] = 1.0
    return chip


@pytest.mark.parametrize("upsample", ["bilinear", "area"])
def test_a_coarser_scene_blurs_the_chip_and_keeps_object_sizes(upsample):
    from geo_hires.train.yolo_data import degrade_to_gsd

    chip = _square_chip()
    texture = []
    for g in (0.5, 0.7, 1.2):
        out = degrade_to_gsd(chip, scene_gsd=g, model_gsd=0.5, upsample=upsample)
        assert out.shape == chip.shape and out.dtype == chip.dtype
        texture.append(float(out[:, 60:, 60:].std()))  # fine detail left in the background
        column = out[0, :, 30]  # the square keeps its place and size (half-maximum extent)
        assert abs(int((column > 0.6).sum()) - 20) <= 2 and bool(column[30] > 0.9)
        assert abs(float(out.mean()) - float(chip.mean())) < 0.01  # resampling keeps the mean
    assert texture[0] > 2 * texture[1] and texture[1] > texture[2]  # blurrier as GSD grows
    assert torch.equal(degrade_to_gsd(chip, scene_gsd=0.3, model_gsd=0.5), chip)  # finer: as is
    with pytest.raises(ConfigError, match="upsample"):
        degrade_to_gsd(chip, scene_gsd=1.0, model_gsd=0.5, upsample="cubic")


def test_scene_gsds_are_drawn_log_uniform_in_the_range_and_seeded():
    from geo_hires.train.yolo_data import draw_gsd

    draws = [draw_gsd(np.random.default_rng(7), (0.3, 1.2)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(0)
    many = np.array([draw_gsd(rng, (0.3, 1.2)) for _ in range(4000)])
    assert many.min() >= 0.3 and many.max() <= 1.2
    assert abs(float(np.median(many)) - 0.6) < 0.03  # geometric mean of 0.3 and 1.2
    with pytest.raises(ConfigError, match="gsd_range"):
        YoloDataConfig(gsd_range=(1.2, 0.3))
    with pytest.raises(ConfigError, match="upsample"):
        YoloDataConfig(upsample=("nearest",))


def test_gsd_range_chips_are_seeded_and_label_the_same_objects(tmp_path):
    train = [_item("a.jpg", [[100, 100, 160, 140], [400, 300, 470, 380]])]
    val = [_item("b.jpg", [[200, 200, 260, 250]])]
    cfg = YoloDataConfig(chip=128, chips_per_image=6, seed=3, gsd_range=(1.0, 1.2))
    for name in ("x", "y"):
        export_yolo_dataset(train, val, ["Airplane"], tmp_path / name, config=cfg)
    for png in sorted((tmp_path / "x" / "train" / "images").iterdir()):
        assert png.read_bytes() == (tmp_path / "y" / "train" / "images" / png.name).read_bytes()
        rows = (png.parent.parent / "labels" / f"{png.stem}.txt").read_text().split("\n")
        pixels = np.asarray(Image.open(png))
        for row in filter(None, rows):  # blurred, but each object is still under its box
            _, cx, cy, _, _ = map(float, row.split())
            assert pixels[int(cy * 128), int(cx * 128)].mean() > 150
    sharp = YoloDataConfig(chip=128, chips_per_image=6, seed=3, gsd_range=None)
    export_yolo_dataset(train, val, ["Airplane"], tmp_path / "z", config=sharp)
    grey = [
        (np.asarray(Image.open(p)) % 255 != 0).mean()
        for name in ("x", "z")
        for p in [sorted((tmp_path / name / "train" / "images").iterdir())[0]]
    ]
    assert grey[0] >= grey[1]  # the degraded chips have (at least as many) in-between pixels
