"""Synthetic scenes: seeded, streamed, georeferenced, with truth that matches the pixels."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from geo_hires.cli import main
from geo_hires.labels import read_labels
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic


def test_same_seed_same_pixels_other_seed_differs(tmp_path):
    spec = SynthSpec(width=700, height=530, seed=4, density=Density.DENSE)
    t1 = write_synthetic(tmp_path / "a.tif", spec)
    t2 = write_synthetic(tmp_path / "b.tif", spec)
    t3 = write_synthetic(tmp_path / "c.tif", SynthSpec(width=700, height=530, seed=5))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert (
            a.profile["tiled"] and a.profile["compress"] == "deflate" and a.crs.to_epsg() == 32633
        )
    with rasterio.open(tmp_path / "c.tif") as c, rasterio.open(tmp_path / "a.tif") as a:
        assert not np.array_equal(a.read(), c.read())
    np.testing.assert_array_equal(t1.boxes, t2.boxes)
    assert len(t1) != len(t3) or not np.array_equal(t1.boxes, t3.boxes)


def test_truth_has_two_size_classes_painted_in_the_pixels(tmp_path):
    spec = SynthSpec(width=2000, height=1500, seed=1, density=Density.DENSE)
    truth = write_synthetic(tmp_path / "s.tif", spec)
    sides = np.maximum(truth.boxes[:, 2] - truth.boxes[:, 0], truth.boxes[:, 3] - truth.boxes[:, 1])
    small, large = sides[truth.classes == 0], sides[truth.classes == 1]
    assert small.min() >= 8 and small.max() <= 20 and large.min() >= 40 and large.max() <= 150
    assert len(small) > 50 and len(large) > 20
    with rasterio.open(tmp_path / "s.tif") as src:
        img = src.read().astype(int)
    for (x0, y0, x1, y1), c in zip(truth.boxes.astype(int), truth.classes, strict=True):
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        assert img[:, cy, cx].sum() > 3 * 130, (x0, y0, c)  # objects are bright, background dark


def test_nodata_collar_and_truth_outside_it(tmp_path):
    spec = SynthSpec(width=900, height=900, seed=2, density=Density.DENSE, nodata=True)
    truth = write_synthetic(tmp_path / "n.tif", spec)
    scene = open_scene(tmp_path / "n.tif")
    assert scene.nodata == 0 and scene.has_mask
    with rasterio.open(tmp_path / "n.tif") as src:
        mask = src.dataset_mask()
    assert mask[-1, 0] == 0 and mask[0, -1] == 255 and 0.02 < (mask == 0).mean() < 0.1
    for x0, y0, x1, y1 in truth.boxes.astype(int):
        assert mask[y0:y1, x0:x1].all()


def test_cli_synth_writes_truth_geojson(tmp_path, capsys):
    out, truth = tmp_path / "s.tif", tmp_path / "s.geojson"
    rc = main(
        [
            "synth",
            str(out),
            "--width",
            "600",
            "--height",
            "400",
            "--seed",
            "3",
            "--truth",
            str(truth),
        ]
    )
    assert rc == 0 and "600x400" in capsys.readouterr().out
    doc = json.loads(truth.read_text())
    assert doc["geo_hires"]["scene_crs"] == "EPSG:32633" and len(doc["features"]) > 0
    back = read_labels(truth).to_pixels(open_scene(out))
    assert set(back.class_names) <= {"vehicle", "aircraft"}
    assert np.allclose(back.boxes, np.round(back.boxes), atol=1e-3)  # lands on whole pixels again
