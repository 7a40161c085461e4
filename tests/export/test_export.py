"""Georeferencing and vector output: RFC 7946 GeoJSON, GeoPackage, quicklook."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pyogrio
import pytest
from affine import Affine
from PIL import Image

from geo_hires.config import ExportConfig
from geo_hires.detections import PixelDetections
from geo_hires.errors import NoCRSWarning
from geo_hires.export import write_geojson, write_gpkg, write_quicklook
from geo_hires.georef import to_map, to_pixels
from geo_hires.scene import open_scene


def _dets(n: int = 40, seed: int = 0) -> PixelDetections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    return PixelDetections.build(
        np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1),
        rng.random(n),
        rng.integers(0, 2, n),
        class_names=["car", "plane"],
        levels=rng.integers(0, 2, n),
        level_names=["full", "coarse"],
    )


def _signed_area(ring: list[list[float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring)) / 2


def test_geojson_is_rfc7946(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = _dets()
    meta = write_geojson(
        tmp_path / "o.geojson",
        dets,
        scene,
        config=ExportConfig(model_name="m1"),
        extra={"config_id": "abc"},
    )
    doc = json.loads((tmp_path / "o.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(dets)
    assert (
        doc["geo_hires"] == meta
        and meta["scene_crs"] == "EPSG:32617"
        and meta["config_id"] == "abc"
    )
    assert sum(meta["counts"].values()) == len(dets)
    for f in doc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        assert _signed_area(ring) > 0  # counter-clockwise
        lon, lat = ring[0]
        assert -82.1 < lon < -81.9 and 29.6 < lat < 29.8  # Florida: lon first
        assert set(f["properties"]) == {"class", "score", "level", "model"}
        assert f["properties"]["model"] == "m1" and f["properties"]["level"] in ("full", "coarse")


def test_geojson_bytes_do_not_depend_on_input_order(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = _dets(100, seed=2)
    write_geojson(tmp_path / "a.geojson", dets, scene)
    write_geojson(
        tmp_path / "b.geojson", dets.take(np.random.default_rng(9).permutation(100)), scene
    )
    assert (tmp_path / "a.geojson").read_bytes() == (tmp_path / "b.geojson").read_bytes()


def test_rotated_transform_gives_rotated_polygons(write_tif):
    a = math.radians(30)
    t = Affine(
        0.5 * math.cos(a),
        -0.5 * math.sin(a),
        500000,
        -0.5 * math.sin(a),
        -0.5 * math.cos(a),
        5000000,
    )
    scene = open_scene(write_tif("rot.tif", np.zeros((3, 64, 64), np.uint8), transform=t))
    dets = PixelDetections.build([[10, 10, 30, 20]], [1.0], [0], class_names=["x"])
    geo = to_map(dets, scene)
    poly = geo.polygons[0]
    edge = poly[1] - poly[0]  # top edge of the box: 20 px at 0.5 m, rotated by 30 degrees
    assert np.hypot(*edge) == pytest.approx(10.0)
    assert math.degrees(math.atan2(-edge[1], edge[0])) == pytest.approx(30.0)
    np.testing.assert_allclose(poly[0], t @ (10, 10))
    np.testing.assert_allclose(to_pixels(geo, scene).boxes, dets.boxes, atol=1e-6)


def test_gpkg_in_scene_crs_matches_geojson(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = _dets()
    write_gpkg(tmp_path / "o.gpkg", dets, scene)
    gdf = pyogrio.read_dataframe(tmp_path / "o.gpkg")
    assert gdf.crs.to_epsg() == 32617 and len(gdf) == len(dets)
    assert list(gdf.columns) == ["class", "score", "level", "model", "geometry"]
    ordered = dets.canonical_order()
    b = np.array([g.bounds for g in gdf.geometry])
    x0, y0 = scene.transform @ (ordered.boxes[:, 0], ordered.boxes[:, 3])
    np.testing.assert_allclose(b[:, :2], np.stack([x0, y0], 1), atol=1e-6)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scene_without_crs_exports_pixel_space(tmp_path, write_tif):
    path = write_tif(
        "p.tif", np.zeros((3, 64, 64), np.uint8), crs=None, transform=Affine.identity()
    )
    with pytest.warns(NoCRSWarning):
        scene = open_scene(path)
    dets = PixelDetections.build([[1, 2, 11, 12]], [0.5], [0], class_names=["x"])
    meta = write_geojson(tmp_path / "p.geojson", dets, scene)
    doc = json.loads((tmp_path / "p.geojson").read_text())
    assert meta["pixel_space"] is True and meta["scene_crs"] is None
    assert sorted(map(tuple, doc["features"][0]["geometry"]["coordinates"][0][:4])) == [
        (1, 2),
        (1, 12),
        (11, 2),
        (11, 12),
    ]


def test_empty_detections_give_empty_collection(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    write_geojson(tmp_path / "e.geojson", PixelDetections.empty(["x"]), scene)
    doc = json.loads((tmp_path / "e.geojson").read_text())
    assert doc["features"] == [] and doc["geo_hires"]["count"] == 0
    write_gpkg(tmp_path / "e.gpkg", PixelDetections.empty(["x"]), scene)
    assert len(pyogrio.read_dataframe(tmp_path / "e.gpkg")) == 0


def test_quicklook_draws_boxes(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = PixelDetections.build([[100, 100, 300, 300]], [1.0], [0], class_names=["x"])
    size = write_quicklook(tmp_path / "q.png", dets, scene, max_pixels=40_000)
    img = np.asarray(Image.open(tmp_path / "q.png"))
    assert img.shape[:2] == (size[1], size[0]) and size[0] * size[1] <= 40_000
    assert tuple(img[size[1] // 2, size[0] // 4]) == (255, 48, 48)  # left edge of the box in red


def test_a_quicklook_failing_midway_leaves_the_earlier_file_whole(tmp_path, fixtures, monkeypatch):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = PixelDetections.build([[100, 100, 300, 300]], [1.0], [0], class_names=["x"])
    write_quicklook(tmp_path / "q.png", dets, scene, max_pixels=40_000)
    before = (tmp_path / "q.png").read_bytes()

    def killed(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", killed)
    with pytest.raises(OSError, match="disk full"):
        write_quicklook(tmp_path / "q.png", PixelDetections.empty(["x"]), scene, max_pixels=40_000)
    assert (tmp_path / "q.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]  # no partial file left either


def test_quicklook_draws_oriented_boxes_as_their_polygons(tmp_path, fixtures):
    """A diamond (a box turned 45°) is drawn along its sides, not around its envelope."""
    scene = open_scene(fixtures / "OSBS_029.tif")
    diamond = [[[200, 50], [350, 200], [200, 350], [50, 200]]]
    dets = PixelDetections.oriented(diamond, [1.0], [0], class_names=["x"])
    size = write_quicklook(tmp_path / "q.png", dets, scene, max_pixels=40_000)
    img = np.asarray(Image.open(tmp_path / "q.png")).astype(int)
    s = size[0] / scene.width
    red = (255, 48, 48)

    def red_near(x: float, y: float) -> bool:  # within a pixel of (x, y), scene pixels
        r, c = round(y * s), round(x * s)
        return bool((img[r - 1 : r + 2, c - 1 : c + 2] == red).all(axis=-1).any())

    assert red_near(125, 125) and red_near(275, 275)  # the middles of two sides
    assert not red_near(55, 55) and not red_near(345, 345)  # the envelope's corners


def test_a_layer_in_pixels_is_written_without_pyogrio_s_crs_warning(tmp_path):
    """The user was told twice more, in pyogrio's words, what NoCRSWarning had said."""
    import warnings

    import rasterio

    path = tmp_path / "bare.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(np.zeros((3, 64, 64), np.uint8))
    scene = open_scene(path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        write_gpkg(tmp_path / "p.gpkg", _dets(5), scene)
    assert not [w for w in said if "'crs' was not provided" in str(w.message)]
    assert len(pyogrio.read_dataframe(tmp_path / "p.gpkg", layer="detections")) == 5


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    """ENOSPC names no file: a batch said only '[Errno 28] No space left on device'."""
    import errno
    import io

    import geo_hires.export.geojson as gj

    class Full(io.StringIO):
        def write(self, _text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gj.os, "fdopen", lambda fd, *a, **k: (os.close(fd), Full())[1])
    target = tmp_path / "x.status.json"
    with pytest.raises(OSError, match="No space left on device") as caught:
        gj.write_text_atomic(target, "{}")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_a_quicklook_shows_the_scene_and_its_nodata_grey(tmp_path, synthetic):
    """Only the boxes' colour was checked: a picture of nothing, or all grey, passed."""
    path = synthetic(600, 400, seed=9, nodata=True)
    scene = open_scene(path)
    write_quicklook(tmp_path / "q.png", PixelDetections.empty(["x"]), scene, max_pixels=60_000)
    img = np.asarray(Image.open(tmp_path / "q.png")).astype(int)
    grey = (img == 40).all(axis=-1)
    assert 0.01 < grey.mean() < 0.9  # nodata is dark grey, the rest is not
    assert img[~grey].std() > 10 and img[~grey].mean() > 20  # imagery, not a flat dark field
