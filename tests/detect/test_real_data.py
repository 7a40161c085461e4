"""End-to-end georeferencing on the real rasters bundled in tests/data."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pyproj
import pytest
from rasterio.windows import Window

from geo_hires.detect.levels import level_window
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import mask_lookup, plan_units
from geo_hires.export import write_geojson
from geo_hires.georef import to_map, to_pixels
from geo_hires.labels import read_labels
from geo_hires.models.card import load_card
from geo_hires.scene import SceneReader, open_scene


def test_trees_geojson_matches_independent_pyproj_to_a_centimetre(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    dets = read_labels(fixtures / "OSBS_029.csv").to_pixels(scene)
    write_geojson(tmp_path / "t.geojson", dets, scene)
    doc = json.loads((tmp_path / "t.geojson").read_text())
    # independent path: raw CSV numbers, the file's geotransform read by GDAL, pyproj directly
    import rasterio

    with rasterio.open(fixtures / "OSBS_029.tif") as src:
        gt = src.get_transform()  # GDAL order: x0, dx, rx, y0, ry, dy
    to_wgs = pyproj.Transformer.from_crs("EPSG:32617", "EPSG:4326", always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    with open(fixtures / "OSBS_029.csv") as fh:
        rows = list(csv.DictReader(fh))
    expected = set()
    for r in rows:
        x0, y0 = float(r["xmin"]), float(r["ymin"])
        e, n = gt[0] + x0 * gt[1] + y0 * gt[2], gt[3] + x0 * gt[4] + y0 * gt[5]
        expected.add(to_wgs.transform(e, n))
    got = [tuple(f["geometry"]["coordinates"][0][k]) for f in doc["features"] for k in range(4)]
    assert len(doc["features"]) == len(rows) == 61
    for lon, lat in expected:  # every label's top-left corner is a vertex of some polygon
        d = min(geod.inv(lon, lat, glon, glat)[2] for glon, glat in got)
        assert d < 0.01


def test_spacenet_buildings_map_pixels_map_round_trip(fixtures):
    scene = open_scene(fixtures / "sample_geotiff.tif")
    labels = read_labels(fixtures / "geotiff_labels.geojson")
    assert labels.crs is not None and len(labels.rings) == 43
    env = labels.to_map()
    px = to_pixels(env, scene)
    assert (px.boxes[:, :2] >= -1).all() and (px.boxes[:, 2:] <= 901).all()
    back = to_map(px, scene)
    np.testing.assert_allclose(back.envelopes(), env.envelopes(), atol=1e-6)
    # vertex-exact route: polygons straight into pixels bound the same boxes
    np.testing.assert_allclose(labels.to_pixels(scene).boxes, px.boxes, atol=1e-6)


def test_dutch_ortho_lands_in_the_netherlands(tmp_path, fixtures):
    scene = open_scene(fixtures / "test_tiled.tif")
    from geo_hires.detections import PixelDetections

    dets = PixelDetections.build([[0, 0, 1000, 1000]], [1.0], [0], class_names=["scene"])
    write_geojson(tmp_path / "nl.geojson", dets, scene)
    lon, lat = json.loads((tmp_path / "nl.geojson").read_text())["features"][0]["geometry"][
        "coordinates"
    ][0][0]
    assert 3.2 < lon < 7.3 and 50.7 < lat < 53.6
    with SceneReader(scene) as r:  # JPEG-compressed tiles decode through windowed reads
        w = r.read(Window(900, 900, 200, 200))
    assert w.valid[:100, :100].all() and not w.valid[100:, :].any()


def test_landsat_collar_blocks_are_skipped(fixtures):
    scene = open_scene(fixtures / "RGB.byte.tif")
    with SceneReader(scene) as r:
        ov = r.read_overview(200_000)
    assert 0.2 < 1 - ov.valid.mean() < 0.5  # the black collar is nodata
    lsn = load_card("aircraft_lsn")  # its levels moved to Landsat's 300 m, so they are scanned
    levels = tuple(dataclasses.replace(lv, target_gsd_m=lv.target_gsd_m * 600) for lv in lsn.levels)
    card = dataclasses.replace(lsn, gsd_m=300.0, levels=levels)
    cfg = DetectConfig(core=64, levels=("full",))
    units, (run,) = plan_units(scene, card, cfg, has_data=mask_lookup(ov.valid, scene))
    assert run.skipped_nodata >= 3 and run.blocks - run.skipped_nodata > 100
    everything, _ = plan_units(scene, card, cfg)
    kept = {b.index for u in units for b in u.blocks}
    with SceneReader(scene) as r:
        d = run.downsample
        empty = {b.index for u in everything for b in u.blocks if r.read(level_window(b, d)).empty}
    skipped = {b.index for u in everything for b in u.blocks} - kept
    assert skipped <= empty  # never skips a block with data (conservative at the border)
    assert len(empty - skipped) <= len(empty) // 2


def test_shared_aircraft_labels_read(shared):
    labels = read_labels(
        shared / "aircraft" / "annotations.csv", image="4f833867-273e-4d73-8bc3-cb2d9ceb54ef.jpg"
    )
    assert len(labels.rings) == 18 and set(labels.names) <= {"Airplane", "Truncated_airplane"}


def test_shared_dota_vehicles_read(shared):
    labels = read_labels(shared / "vehicles" / "P1888.txt")
    assert len(labels.rings) == 64
    assert labels.names.count("large-vehicle") == 50 and labels.names.count("small-vehicle") == 14


@pytest.mark.parametrize(
    "name", ["OSBS_029.tif", "sample_geotiff.tif", "RGB.byte.tif", "test_tiled.tif"]
)
def test_every_fixture_reads_as_model_input(fixtures, name):
    scene = open_scene(fixtures / name)
    with SceneReader(scene) as r:
        ov = r.read_overview(50_000)
    assert ov.image.shape[0] == 3 and ov.image.dtype == np.float32
    assert 0.05 < ov.image[:, ov.valid].mean() < 0.95
