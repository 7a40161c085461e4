"""A scene across the antimeridian: its detections and its STAC footprint are split there
(RFC 7946 §3.1.9), not drawn around the world."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer

from geo_hires.cli import main
from geo_hires.export.stac import footprint
from geo_hires.georef import lonlat_bounds, split_antimeridian
from geo_hires.scene import open_scene


def test_a_polygon_across_the_antimeridian_is_split_there_and_others_are_not():
    across = shapely.Polygon([(179.5, 0), (-179.5, 0), (-179.5, 1), (179.5, 1)])
    split = split_antimeridian(across)
    assert split.geom_type == "MultiPolygon" and len(split.geoms) == 2
    assert split.area == pytest.approx(1.0)
    assert sorted(p.bounds for p in split.geoms) == [(-180, 0, -179.5, 1), (179.5, 0, 180, 1)]
    assert lonlat_bounds(split) == (179.5, 0, -179.5, 1)  # west > east across it
    within = shapely.box(10, 0, 11, 1)
    assert split_antimeridian(within) is within and lonlat_bounds(within) == (10, 0, 11, 1)
    south = split_antimeridian(shapely.Polygon([(179, -40), (-179, -40), (-179, -39), (179, -39)]))
    assert sorted(p.bounds for p in south.geoms) == [(-180, -40, -179, -39), (179, -40, 180, -39)]
    apart = shapely.MultiPolygon([shapely.box(10, 0, 11, 1), shapely.box(20, 0, 21, 1)])
    edge = shapely.MultiPolygon([shapely.box(-180, 0, -179, 1), shapely.box(20, 0, 21, 1)])
    for shape in (apart, edge, shapely.box(-180, 0, -179, 1), shapely.box(179, 0, 180, 1)):
        assert lonlat_bounds(shape) == shape.bounds  # not split: its own bounds


def test_detections_and_the_footprint_of_a_scene_across_the_antimeridian(demo_crop, tmp_path):
    crop = demo_crop(0, 0, 1536, 1536)
    first = tmp_path / "utm.geojson"
    assert main(["detect", str(crop), "-o", str(first), "--model", "aircraft_lsn"]) == 0
    plane = shapely.geometry.shape(json.loads(first.read_text())["features"][0]["geometry"])
    with rasterio.open(crop) as src:  # the column of that aircraft's centre becomes 180°
        col = (~src.transform * Transformer.from_crs(4326, src.crs, always_xy=True).transform(
            plane.centroid.x, plane.centroid.y))[0]  # fmt: skip
        x, y = Transformer.from_crs(4326, 32660, always_xy=True).transform(180.0, 10.0)
        profile = {**src.profile, "crs": "EPSG:32660",
                   "transform": Affine(0.5, 0, x - 0.5 * col, 0, -0.5, y)}  # fmt: skip
        scene = tmp_path / "dateline.tif"
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read())
    out, item = tmp_path / "d.geojson", tmp_path / "d.stac.json"
    assert main(["detect", str(scene), "-o", str(out), "-o", str(item),
                 "--model", "aircraft_lsn"]) == 0  # fmt: skip
    features = json.loads(out.read_text())["features"]
    assert len(features) == len(json.loads(first.read_text())["features"])
    kinds = []
    for f in features:
        geom = shapely.geometry.shape(f["geometry"])
        kinds.append(geom.geom_type)
        for part in shapely.get_parts(geom):
            x0, _, x1, _ = part.bounds
            assert x1 - x0 < 1 and (x0 >= 179 or x1 <= -179), f  # metres of a plane, not 360°
    assert "MultiPolygon" in kinds and "Polygon" in kinds
    doc = json.loads(item.read_text())
    assert doc["geometry"]["type"] == "MultiPolygon"
    west, _, east, _ = doc["bbox"]
    assert 179 < west < 180 and -180 < east < -179  # west > east: across the antimeridian
    assert np.isfinite(doc["bbox"]).all()


def test_a_geographic_scene_across_the_antimeridian_is_wrapped_and_split(demo_crop, tmp_path):
    """A raster in EPSG:4326 runs on past 180°: its detections, footprint and coverage had
    longitudes up to 180.02, unsplit (and the coverage GeoJSON empty parts)."""
    crop = demo_crop(0, 0, 1536, 1536)
    deg = 0.5 / 111_320  # the crop's 0.5 m pixels, in degrees at the equator
    with rasterio.open(crop) as src:
        profile = {**src.profile, "crs": "EPSG:4326",
                   "transform": Affine(deg, 0, 180 - 700 * deg, 0, -deg, 0.01)}  # fmt: skip
        scene = tmp_path / "geographic.tif"
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read())
    out, item, cov = tmp_path / "g.geojson", tmp_path / "g.stac.json", tmp_path / "c.geojson"
    assert main(["detect", str(scene), "-o", str(out), "-o", str(item), "--coverage", str(cov),
                 "--model", "aircraft_lsn"]) == 0  # fmt: skip
    for doc in (json.loads(out.read_text()), json.loads(cov.read_text())):
        for f in doc["features"]:
            geom = shapely.geometry.shape(f["geometry"])  # an empty part: IndexError
            x0, _, x1, _ = geom.bounds
            assert x0 >= -180 and x1 <= 180, f
    doc = json.loads(item.read_text())
    assert doc["geometry"]["type"] == "MultiPolygon"
    assert all(p.exterior.is_ccw for p in shapely.geometry.shape(doc["geometry"]).geoms)
    west, _, east, _ = doc["bbox"]
    assert 179.99 < west < 180 and -180 < east < -179.99


@pytest.mark.parametrize("west", [0.0, -10.0])
def test_the_footprint_of_a_global_raster_is_the_world(tmp_path, west):
    """A whole-world raster from 0 to 360° (or -10 to 350°): wrapped, its east edge fell on its
    west edge and the STAC footprint was a line of zero area."""
    path = tmp_path / "world.tif"
    profile = {"driver": "GTiff", "width": 360, "height": 180, "count": 3, "dtype": "uint8",
               "crs": "EPSG:4326", "transform": Affine(1, 0, west, 0, -1, 90)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, 180, 360), 90, np.uint8))
    geom = shapely.geometry.shape(footprint(open_scene(path)))
    assert geom.equals(shapely.box(-180, -90, 180, 90)) and geom.exterior.is_ccw
