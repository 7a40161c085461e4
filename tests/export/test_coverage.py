"""Coverage: the area each level scanned (valid data ∩ AOI, minus skipped blocks).

A detection can only be reported where its level looked, so every detection's centre must lie
in its level's coverage; the nodata collar and everything outside the AOI must not be covered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic

SPEC = SynthSpec(width=2000, height=1600, seed=31, density=Density.DENSE, nodata=True)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("coverage") / "scene.tif"
    write_synthetic(path, SPEC)
    return path


def _px(geom, transform=SPEC.transform):
    inv = ~transform
    return shapely.transform(geom, lambda xy: np.column_stack(inv @ (xy[:, 0], xy[:, 1])))


def test_coverage_holds_every_detection_and_leaves_out_nodata_and_outside_aoi(scene, tmp_path):
    aoi_px = shapely.box(0, 300, 1400, 1600)  # reaches into the nodata collar (lower left)
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(
        geometry=[shapely.affinity.affine_transform(aoi_px, [0.5, 0, 0, -0.5, 500000, 5000000])],
        crs="EPSG:32633",
    ).to_file(aoi)
    gpkg, cov = tmp_path / "d.gpkg", tmp_path / "cov.fgb"
    args = ["detect", str(scene), "-o", str(gpkg), "--coverage", str(cov), "--block", "256",
            "--model", "aircraft_lsn"]  # fmt: skip
    assert main([*args, "--aoi", str(aoi), "--score-threshold", "0.2"]) == 0
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]  # + the styles QGIS applies
    assert layers == ["detections", "coverage", "layer_styles"]
    layer = gpd.read_file(gpkg, layer="coverage")
    assert list(layer["level"]) == ["full", "coarse"]
    fgb = gpd.read_file(cov)
    assert fgb.geometry.area.round(3).tolist() == layer.geometry.area.round(3).tolist()
    dets = gpd.read_file(gpkg, layer="detections")
    assert len(dets) >= 5
    for level, footprint in zip(layer["level"], layer.geometry, strict=True):
        centres = dets[dets["level"] == level].geometry.centroid
        assert footprint.buffer(0.01).contains(centres).all(), level
        px = _px(footprint)
        assert px.difference(aoi_px.buffer(1e-6)).area < 1e-3  # nothing outside the AOI
        xs, ys = np.meshgrid(np.arange(5, 400, 20.0), np.arange(1210, 1595, 20.0))
        inside = SPEC.in_collar(xs, ys)
        collar = list(zip(xs[inside], ys[inside], strict=True))
        assert collar and not any(px.contains(shapely.Point(x, y)) for x, y in collar)
        assert 0.5 * aoi_px.area < px.area <= aoi_px.area


def test_without_aoi_or_nodata_each_level_covers_the_scene(tmp_path):
    path = tmp_path / "plain.tif"
    write_synthetic(path, SynthSpec(width=1200, height=900, seed=2))
    cov = tmp_path / "cov.geojson"
    assert (
        main(
            [
                "detect",
                str(path),
                "-o",
                str(tmp_path / "d.geojson"),
                "--coverage",
                str(cov),
                "--model",
                "aircraft_lsn",
            ]
        )
        == 0
    )
    doc = json.loads(cov.read_text())
    assert [f["properties"]["level"] for f in doc["features"]] == ["full", "coarse"]
    assert all(f["properties"]["pixels"] == 1200 * 900 for f in doc["features"])
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 44 < lat < 46  # WGS84, lon/lat order (UTM 33N, near 15E 45N)


def test_valid_area_and_coverage_frame_by_hand(write_tif, tmp_path):
    from affine import Affine

    from geo_hires.detect.levels import LevelRun
    from geo_hires.errors import ConfigError
    from geo_hires.export import coverage_frame, valid_area, write_coverage
    from geo_hires.scene import open_scene

    scene = open_scene(write_tif("s.tif", np.zeros((3, 300, 400), np.uint8)))
    assert valid_area(scene, None) is None
    valid = np.zeros((2, 4), bool)  # the decision mask: a cell is 100 x 150 level-0 pixels
    valid[0, :2] = valid[1, 3] = True
    area = valid_area(scene, valid)
    want = shapely.box(0, 0, 200, 150).union(shapely.box(300, 150, 400, 300))
    assert area.symmetric_difference(want).area < 1e-9
    full = LevelRun(name="full", downsample=1, blocks=2, skipped_nodata=0,
                    cores=((0, 0, 100, 100), (100, 0, 200, 100)))  # fmt: skip
    coarse = LevelRun(name="coarse", downsample=2, blocks=1, skipped_nodata=1)  # nothing scanned
    aoi = shapely.box(50, 0, 400, 400)
    frame = coverage_frame([full, coarse], scene, aoi=aoi, valid=shapely.box(0, 0, 150, 50))
    assert frame["level"].tolist() == ["full", "coarse"]
    assert frame["downsample"].tolist() == [1, 2] and frame["pixels"].tolist() == [5000, 0]
    t = Affine(0.5, 0, 500000, 0, -0.5, 5000000)  # write_tif's transform: scene CRS, metres
    x0, y1 = t @ (50, 0)
    x1, y0 = t @ (150, 50)
    assert frame.geometry.iloc[0].symmetric_difference(shapely.box(x0, y0, x1, y1)).area < 1e-6
    assert frame.geometry.iloc[1].is_empty and frame.crs.to_epsg() == 32633
    limited = coverage_frame([full], scene, aoi=aoi)  # no validity mask: the AOI alone limits
    assert limited["pixels"].tolist() == [15000]
    formats = "use one of .stac.json, .geojson, .json, .gpkg, .parquet, .fgb"
    for name, message in (("c.txt", ".txt; "), ("c", "(no extension); ")):
        with pytest.raises(
            ConfigError, match=re.escape(f"'{tmp_path / name}': unknown format {message}{formats}")
        ):
            write_coverage(tmp_path / name, frame)
        assert not (tmp_path / name).exists()
    write_coverage(tmp_path / "c.gpkg", frame)
    layers = pyogrio.list_layers(tmp_path / "c.gpkg")[:, 0].tolist()
    assert layers == ["coverage", "layer_styles"]  # the coverage, and its default style


def test_an_empty_coverage_is_written_in_every_format(tmp_path, demo_crop, capsys):
    """Every level skipped (a 3 m scene, a 0.5 m model) or a level with nothing to look at (a
    cascade without candidates): the layer is empty or holds a row without a geometry, which
    GeoPackage and FlatGeobuf (no spatial index then) take; both were tracebacks."""
    coarse = tmp_path / "coarse.tif"
    write_synthetic(coarse, SynthSpec(width=300, height=200, seed=3, gsd_m=3.0))
    out = tmp_path / "coarse.gpkg"
    assert main(["detect", str(coarse), "-o", str(out), "-o", str(tmp_path / "d.parquet"),
                 "-o", str(tmp_path / "d.fgb"), "--model", "aircraft_lsn",
                 "--coverage", str(tmp_path / "coarse.fgb")]) == 0  # fmt: skip
    assert "0 detections" in capsys.readouterr().out
    import sqlite3

    import pyarrow.parquet as pq

    with sqlite3.connect(out) as db:  # no detection: the schema of a run that finds some
        columns = {row[1]: row[2] for row in db.execute("pragma table_info(detections)")}
        kind = db.execute("select geometry_type_name from gpkg_geometry_columns "
                          "where table_name = 'detections'").fetchone()[0]  # fmt: skip
    assert (columns["class"], columns["level"], columns["score"], kind) == (
        "TEXT", "TEXT", "REAL", "POLYGON")  # were REAL, REAL, REAL, GEOMETRY  # fmt: skip
    schema = pq.read_schema(tmp_path / "d.parquet")
    assert "string" in str(schema.field("class").type)
    assert set(schema.metadata) == {b"pandas", b"geo"}  # no writer's attrs: the same bytes
    assert pyogrio.read_info(tmp_path / "d.fgb")["geometry_type"] == "Polygon"
    for empty in (gpd.read_file(out, layer="coverage"), gpd.read_file(tmp_path / "coarse.fgb")):
        assert empty.empty and empty.crs.to_epsg() == 32633  # the scene's CRS, kept
        assert list(empty.columns) == ["level", "downsample", "pixels", "geometry"]
    tiny = demo_crop(0, 0, 100, 100)  # no candidate: the refiner has nothing to look at
    fgb = tmp_path / "tiny.fgb"
    assert main(["detect", str(tiny), "-o", str(tmp_path / "t.geojson"), "--coverage",
                 str(fgb)]) == 0  # fmt: skip
    cover = gpd.read_file(fgb)
    assert list(cover["level"]) == ["full", "coarse", "refine"]
    assert cover.geometry.isna().tolist() == [False, False, True]


def test_the_coverage_of_a_scene_without_crs_is_in_its_pixels(tmp_path, demo_crop):
    """GDAL's RFC 7946 mode took the pixels for degrees: a GeometryCollection cut at ±180."""
    import rasterio
    from affine import Affine

    with rasterio.open(demo_crop(0, 0, 600, 400)) as src:
        profile = {**src.profile, "crs": None, "transform": Affine.identity()}
        scene = tmp_path / "nocrs.tif"
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read())
    cov = tmp_path / "c.geojson"
    assert main(["detect", str(scene), "-o", str(tmp_path / "d.geojson"), "--model",
                 "aircraft_lsn", "--coverage", str(cov)]) == 0  # fmt: skip
    full = shapely.geometry.shape(json.loads(cov.read_text())["features"][0]["geometry"])
    assert full.geom_type == "Polygon" and full.bounds == (0, 0, 600, 400)


def test_layers_are_named_for_what_they_hold_not_the_temporary_file(scene, tmp_path):
    outs = [tmp_path / "d.fgb", tmp_path / "c.geojson", tmp_path / "c.fgb"]
    assert main(["detect", str(scene), "-o", str(outs[0]), "--model", "aircraft_lsn",
                 "--coverage", str(outs[1])]) == 0  # fmt: skip
    assert main(["detect", str(scene), "-o", str(tmp_path / "d.geojson"), "--model",
                 "aircraft_lsn", "--coverage", str(outs[2])]) == 0  # fmt: skip
    names = [pyogrio.list_layers(p)[0][0] for p in outs]
    assert names == ["detections", "coverage", "coverage"]  # was ".d.fgb.partial" …
    assert json.loads(outs[1].read_text())["name"] == "coverage"
