"""Reading a vector file with several layers: detect's GeoPackage is read as its detections,
without pyogrio's warning telling the user to pass a layer no command takes."""

from __future__ import annotations

import warnings

import geopandas as gpd
import pytest
import shapely

from geo_hires.vectorfile import read_vector


def _frame(n: int) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"n": list(range(n))},
                            geometry=[shapely.box(i, 0, i + 1, 1) for i in range(n)],
                            crs="EPSG:32631")  # fmt: skip


def test_the_detections_layer_is_read_whatever_its_place(tmp_path):
    path = tmp_path / "d.gpkg"
    _frame(1).to_file(path, layer="coverage", engine="pyogrio")
    _frame(3).to_file(path, layer="detections", engine="pyogrio")
    _frame(2).to_file(path, layer="counts", engine="pyogrio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_vector(path, "the truth")) == 3


def test_another_file_of_many_layers_says_which_it_read(tmp_path):
    path = tmp_path / "o.gpkg"
    _frame(2).to_file(path, layer="a", engine="pyogrio")
    _frame(4).to_file(path, layer="b", engine="pyogrio")
    with pytest.warns(UserWarning, match=r"the AOI o.gpkg has 2 layers; reading the first, 'a'"):
        assert len(read_vector(path, "the AOI")) == 2
    single = tmp_path / "s.gpkg"
    _frame(5).to_file(single, engine="pyogrio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_vector(single, "the AOI")) == 5
