"""Outputs by extension: GeoJSON, GeoPackage, GeoParquet, FlatGeobuf, several at once.

Each binary format is opened with geopandas and compared with the GeoJSON written in the same
run: same count, the scene's CRS, the same polygons once reprojected to WGS84 (to the GeoJSON's
8 decimals), the same attributes in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from pyproj import CRS

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("outputs") / "scene.tif"
    write_synthetic(path, SynthSpec(width=1400, height=1100, seed=8, density=Density.DENSE))
    return path


def _by_place(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    c = shapely.centroid(frame.geometry.values)  # shapely: no geographic-CRS warning
    x, y = shapely.get_x(c).round(6), shapely.get_y(c).round(6)
    return frame.assign(_x=x, _y=y).sort_values(["_x", "_y", "score"])


def test_every_format_holds_the_geojsons_features(scene, tmp_path):
    outs = [tmp_path / f"d.{ext}" for ext in ("geojson", "gpkg", "parquet", "fgb")]
    args = ["detect", str(scene), "--block", "512", "--model", "aircraft_lsn"]  # the fast scanner
    assert main([*args, *(a for o in outs for a in ("-o", str(o)))]) == 0
    alone = tmp_path / "alone.geojson"
    assert main([*args, "-o", str(alone)]) == 0
    assert outs[0].read_bytes() == alone.read_bytes()  # GeoJSON unchanged by the others
    ref = gpd.read_file(outs[0])
    assert len(ref) >= 20 and CRS(ref.crs) == CRS("EPSG:4326")
    scene_crs = CRS(json.loads(outs[0].read_text())["geo_hires"]["scene_crs"])
    for path in outs[1:]:
        got = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
        assert CRS(got.crs) == scene_crs, path.suffix
        assert len(got) == len(ref)
        got = got.to_crs("EPSG:4326")
        want = ref
        if path.suffix == ".fgb":  # FlatGeobuf's spatial index stores features in its own order
            got, want = _by_place(got), _by_place(ref)
        assert list(got["class"]) == list(want["class"])
        assert list(got["level"]) == list(want["level"])
        assert list(got["score"].round(4)) == list(want["score"])  # GeoJSON keeps 4 decimals
        for a, b in zip(got.geometry, want.geometry, strict=True):
            assert shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance=2e-8)
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["x.shp"], "unknown format .shp"),
        (["x"], "unknown format (no extension)"),
        (["x.geojson", "x.geojson"], "is given twice"),
    ],
)
def test_bad_outputs_are_refused_before_any_work(scene, tmp_path, capsys, outputs, message):
    paths = [str(tmp_path / o) for o in outputs]
    assert main(["detect", str(scene), *(a for p in paths for a in ("-o", p))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("geo-hires: error: output") and message in err[-1], err
    assert not list(tmp_path.iterdir())  # nothing written, not even a journal
    if "unknown format" in message:  # the formats to choose from, .json said once as .geojson
        assert (
            ".geojson (GeoJSON (WGS84)), .gpkg (GeoPackage" in err[-1] and " .json (" not in err[-1]
        )


@pytest.mark.parametrize(
    ("quicklook", "message"),
    [
        ("x.geojson", "quicklook "),  # would replace the GeoJSON with a PNG
        ("x.jpg", "written as PNG; name it .png"),
    ],
)
def test_a_quicklook_that_is_not_a_png_is_refused_before_any_work(
    scene, tmp_path, capsys, quicklook, message
):
    args = ["-o", str(tmp_path / "x.geojson"), "--quicklook", str(tmp_path / quicklook)]
    assert main(["detect", str(scene), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("geo-hires: error: quicklook") and message in err[-1], err
    assert not list(tmp_path.iterdir())
