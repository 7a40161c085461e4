"""Nodata the network must never see: a float scene's NaNs (declared as nodata or not) read as
0 and invalid, exactly as a numeric nodata value is."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from rasterio.windows import Window

from geo_hires.cli import main
from geo_hires.scene import open_scene
from geo_hires.scene.read import SceneReader


def _float_scene(src_path, out, fill: float, nodata: float | None):
    with rasterio.open(src_path) as src:
        data = src.read().astype(np.float32) / 255
        profile = {**src.profile, "dtype": "float32", "nodata": nodata, "compress": "deflate",
                   "photometric": "rgb"}  # fmt: skip
    data[:, :, :512] = fill  # the left third is nodata
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def test_nan_nodata_is_zero_and_invalid_and_finds_what_a_numeric_nodata_finds(demo_crop, tmp_path):
    crop = demo_crop(0, 0, 1536, 1536)
    scenes = {
        "nan": _float_scene(crop, tmp_path / "nan.tif", np.nan, np.nan),
        "nan, undeclared": _float_scene(crop, tmp_path / "nan_nond.tif", np.nan, None),
        "-9999": _float_scene(crop, tmp_path / "m9999.tif", -9999.0, -9999.0),
    }
    for name, path in scenes.items():
        with SceneReader(open_scene(path)) as reader:
            got = reader.read(Window(256, 0, 512, 512))
        assert np.isfinite(got.image).all(), name  # NaN would spread through every conv
        assert not got.valid[:, :256].any() and got.valid[:, 256:].all(), name
        assert (got.image[:, :, :256] == 0).all(), name
    found = {}
    for name, path in scenes.items():
        out = tmp_path / f"{path.stem}.geojson"
        assert main(["detect", str(path), "-o", str(out), "--model", "aircraft_lsn"]) == 0
        found[name] = [f["geometry"] for f in json.loads(out.read_text())["features"]]
    assert len(found["-9999"]) >= 10
    assert found["nan"] == found["-9999"]  # was 11 of 16: the aircraft near the edge lost
    assert len(found["nan, undeclared"]) == len(found["-9999"])
