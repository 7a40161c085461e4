"""STAC result items, styled and byte-identical GeoPackages, counts per AOI polygon."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from geo_hires.cli import main
from geo_hires.detect.options import DEFAULT_MODEL
from geo_hires.export.stac_schemas import validate_item
from geo_hires.models.card import shipped_models
from geo_hires.models.mlm import mlm_item
from tests.halves import scene_halves
from tests.qgis import run_qgis


@pytest.fixture(scope="module")
def run(demo_crop, tmp_path_factory):
    """detect with a two-polygon AOI into GeoJSON, GeoPackage, STAC item and coverage."""
    out = tmp_path_factory.mktemp("stac")
    scene = demo_crop(0, 0, 1536, 1024)
    scene_halves(scene).to_file(out / "aprons.gpkg")
    args = ["detect", str(scene), "--aoi", str(out / "aprons.gpkg"), "--score-threshold", "0.3",
            "-o", str(out / "r.geojson"), "-o", str(out / "r.gpkg"), "-o", str(out / "r.stac.json"),
            "-o", str(out / "r2.gpkg"), "--coverage", str(out / "cov.geojson")]  # fmt: skip
    assert main(args) == 0
    return out, scene, args


def test_result_item_validates_and_describes_the_run(run):
    out, scene, _ = run
    item = json.loads((out / "r.stac.json").read_text())
    assert len(validate_item(item)) == 3
    props = item["properties"]
    assert (props["label:type"], props["label:tasks"], props["label:methods"]) == (
        "vector", ["detection"], ["automated"])  # fmt: skip
    assert props["processing:level"] == "L4"
    n = len(json.loads((out / "r.geojson").read_text())["features"])
    total, *parts = props["label:overviews"]
    assert total["counts"] == [{"name": "Airplane", "count": n}]
    assert [p["geo_hires:aoi"] for p in parts] == ["west", "east"]
    assert sum(p["counts"][0]["count"] for p in parts) == n
    assert item["assets"]["labels"]["href"] == "r.geojson" and "gpkg" in item["assets"]
    assert item["assets"]["gpkg_2"]["href"] == "r2.gpkg"  # a second GeoPackage was left out
    assert {k: v for k, v in item["assets"].items() if k in ("labels", "gpkg_2", "coverage")} == {
        "labels": {"href": "r.geojson", "type": "application/geo+json",
                   "title": "detections (geojson)", "roles": ["labels", "data"]},
        "gpkg_2": {"href": "r2.gpkg", "type": "application/geopackage+sqlite3",
                   "title": "detections (gpkg)", "roles": ["data"]},
        "coverage": {"href": "cov.geojson", "type": "application/geo+json",
                     "title": "area scanned", "roles": ["metadata"]},
    }  # fmt: skip

    assert shapely.geometry.shape(item["geometry"]).exterior.is_ccw  # RFC 7946's winding
    assert item["assets"]["coverage"]["href"] == "cov.geojson"
    links = {ln["rel"]: ln["href"] for ln in item["links"]}
    assert links["source"].endswith(scene.name)
    assert json.loads(Path(links["derived_from"]).read_text())["id"] == DEFAULT_MODEL
    assert props["geo_hires:provenance"]["config_id"]


def test_an_item_alone_is_refused(tmp_path, demo_crop):
    scene = demo_crop(0, 0, 256, 256)
    assert main(["detect", str(scene), "-o", str(tmp_path / "r.stac.json")]) == 2


def test_shipped_mlm_items_validate_and_are_current():
    for name in shipped_models():
        item = mlm_item(name)
        validate_item(item)
        weights = [a for a in item["assets"].values() if "mlm:model" in a["roles"]]
        assert weights and all(a["file:checksum"].startswith("1220") for a in weights)
        assert item["properties"]["gsd"] == 0.5
    from geo_hires.models.card import bundle_dir
    from geo_hires.models.mlm import MLM_FILE

    for name in shipped_models():  # scripts/write_mlm_items.py was run after the last change
        assert json.loads((bundle_dir(name) / MLM_FILE).read_text()) == mlm_item(name)


def test_a_broken_item_does_not_validate(run):
    import pystac

    item = json.loads((run[0] / "r.stac.json").read_text())
    item["properties"]["label:type"] = "pixels"
    with pytest.raises(pystac.errors.STACValidationError):
        validate_item(item)


def test_counts_layer_per_polygon_and_class(run):
    out, _, _ = run
    counts = pyogrio.read_dataframe(out / "r.gpkg", layer="counts")
    assert list(counts["name"]) == ["west", "east"] and set(counts["class"]) == {"Airplane"}
    dets = gpd.read_file(out / "r.gpkg", layer="detections")
    west = counts.geometry.iloc[0]
    assert counts["count"].iloc[0] == int(dets.geometry.centroid.within(west).sum())


def test_geopackages_are_byte_identical_and_styled(run, tmp_path):
    out, _, args = run
    again = [a.replace(str(out), str(tmp_path)) for a in args]
    (tmp_path / "aprons.gpkg").write_bytes((out / "aprons.gpkg").read_bytes())
    assert main(again) == 0
    assert (tmp_path / "r.gpkg").read_bytes() == (out / "r.gpkg").read_bytes()
    assert (tmp_path / "r.stac.json").read_bytes() == (out / "r.stac.json").read_bytes()
    with sqlite3.connect(out / "r.gpkg") as db:
        rows = db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
        stamps = {r[0] for r in db.execute("SELECT last_change FROM gpkg_contents")}
    assert rows == [("detections", 1), ("coverage", 1), ("counts", 1)]
    assert stamps == {"1970-01-01T00:00:00.000Z"}
    import pyogrio  # the fixed date held only while geo_hires wrote: a host's own files keep theirs

    assert pyogrio.get_gdal_config_option("OGR_CURRENT_DATE") is None


@pytest.mark.qgis
def test_qgis_shows_the_stored_styles(run):
    out, _, _ = run
    seen = run_qgis("gpkg_style.py", str(out / "r.gpkg"), "detections", "coverage", "counts")
    det, cov, counts = seen["detections"], seen["coverage"], seen["counts"]
    assert det["renderer"] == "categorizedSymbol" and det["attr"] == "class"
    assert det["categories"] == [["Airplane", "#e41a1c"]]
    assert det["labels"] and "score" in det["label_expression"]
    assert det["sld_renderer"] == "RuleRenderer" and det["sld_rules"] == ["Airplane"]
    assert (cov["renderer"], cov["fill_style"], cov["outline_style"]) == (
        "singleSymbol", "b_diagonal", "dash")  # fmt: skip
    assert counts["labels"] and "count" in counts["label_expression"]
    assert cov["sld_renderer"] == "singleSymbol"


def test_a_remote_scene_is_linked_by_its_url_without_the_query(tmp_path):
    from geo_hires.export.stac import _href

    signed = "https://example.com/apron/scene.tif?X-Amz-Signature=secret"
    assert _href(signed, tmp_path) == "https://example.com/apron/scene.tif"
    assert _href("s3://scenes/apron/scene.tif", tmp_path) == "s3://scenes/apron/scene.tif"
    assert _href(tmp_path / "out" / "r.geojson", tmp_path) == "out/r.geojson"


def test_the_item_links_the_model_that_ran_not_the_options_default(demo_crop, tmp_path):
    """A bundle passed beside default options was linked as the default model's item."""
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import Outputs, run_detect

    scene = demo_crop(1024, 512, 1024, 1024)
    files = (str(tmp_path / "b.geojson"), str(tmp_path / "b.stac.json"))
    run_detect(scene, Outputs(files=files), bundle=load_bundle("aircraft_lsn"))
    item = json.loads((tmp_path / "b.stac.json").read_text())
    links = {ln["rel"]: ln["href"] for ln in item["links"]}
    assert json.loads(Path(links["derived_from"]).read_text())["id"] == "aircraft_lsn"


def test_the_item_links_a_bundle_folder_named_in_the_options(demo_crop, tmp_path):
    import shutil

    from geo_hires.detect.options import DetectOptions
    from geo_hires.models.card import bundle_dir
    from geo_hires.pipeline import Outputs, run_detect

    folder = tmp_path / "mine"
    shutil.copytree(bundle_dir("aircraft_lsn"), folder)
    files = (str(tmp_path / "f.geojson"), str(tmp_path / "f.stac.json"))
    run_detect(
        demo_crop(1024, 512, 512, 512), Outputs(files=files), DetectOptions(model=str(folder))
    )
    links = {ln["rel"]: ln["href"] for ln in json.loads(Path(files[1]).read_text())["links"]}
    href = Path(files[1]).parent / links["derived_from"]  # relative to the item
    assert href.resolve() == (folder / "mlm.stac.json").resolve()
