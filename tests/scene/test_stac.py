"""STAC items as scene references: the visual/RGB asset, band order from eo:bands, provenance,
and refusals (no usable asset, remote hrefs, assets outside the item's folder when confined)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geo_hires.cli import main
from geo_hires.scene import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stac")
    rgb = root / "scene_rgb.tif"
    write_synthetic(rgb, SynthSpec(width=1200, height=900, seed=5))
    with rasterio.open(rgb) as src:  # the same pixels as an untagged BGRN stack
        data, profile = src.read(), src.profile
    profile.update(count=4, photometric="MINISBLACK")
    with rasterio.open(root / "scene_bgrn.tif", "w", **profile) as dst:
        dst.write(np.stack([data[2], data[1], data[0], data[1]]))
        dst.colorinterp = [ColorInterp.undefined] * 4
    return root


def _item(folder: Path, assets: dict, name: str = "item.json") -> Path:
    doc = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": "S2X_20260501_T33TVL",
        "collection": "synthetic-l2a",
        "geometry": {"type": "Point", "coordinates": [15.0, 45.0]},
        "bbox": [15.0, 45.0, 15.0, 45.0],
        "properties": {"datetime": "2026-05-01T10:00:00Z"},
        "links": [],
        "assets": assets,
    }
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


BANDS = [{"name": n, "common_name": n} for n in ("blue", "green", "red", "nir")]


def test_an_item_runs_its_rgb_asset_with_the_band_order_it_declares(folder, tmp_path):
    item = _item(
        folder,
        {
            "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
            "stack": {"href": "./scene_bgrn.tif", "type": "image/tiff; application=geotiff",
                      "eo:bands": BANDS, "roles": ["data"]},
        },
    )  # fmt: skip
    out, ref = tmp_path / "item.geojson", tmp_path / "ref.geojson"
    # the scanner alone: it finds some of this synthetic scene's shapes, which are what the
    # comparison needs (the default cascade's refiner, trained on real aircraft, confirms none)
    lsn = ["--block", "512", "--model", "aircraft_lsn"]
    assert main(["detect", str(item), "-o", str(out), *lsn]) == 0
    assert main(["detect", str(folder / "scene_rgb.tif"), "-o", str(ref), *lsn]) == 0
    got, want = json.loads(out.read_text()), json.loads(ref.read_text())
    assert got["features"] == want["features"] and len(want["features"]) > 0
    assert got["geo_hires"]["bands"] == [3, 2, 1]
    assert got["geo_hires"]["stac"] == {
        "item": "S2X_20260501_T33TVL", "collection": "synthetic-l2a", "asset": "stack"
    }  # fmt: skip


def test_visual_role_wins_and_asset_overrides(folder, tmp_path):
    item = _item(
        folder,
        {
            "stack": {"href": "scene_bgrn.tif", "eo:bands": BANDS},
            "rgb": {"href": "scene_rgb.tif", "roles": ["visual"]},
        },
        name="item2.json",
    )
    out = tmp_path / "o.geojson"
    assert main(["detect", str(item), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["geo_hires"]["stac"]["asset"] == "rgb"
    assert main(["detect", str(item), "-o", str(out), "--asset", "stack"]) == 0
    doc = json.loads(out.read_text())["geo_hires"]
    assert doc["stac"]["asset"] == "stack" and doc["bands"] == [3, 2, 1]


@pytest.mark.parametrize(
    ("assets", "extra", "message"),
    [
        ({"meta": {"href": "m.xml", "type": "application/xml"}}, [], "no visual or RGB asset"),
        ({"visual": {"href": "ftp://example.com/x.tif"}}, [], "read only from files, s3://"),
        ({"visual": {"href": "scene_rgb.tif"}}, ["--asset", "nope"], "has no asset 'nope'"),
    ],
)
def test_unusable_items_are_one_line_errors(folder, tmp_path, capsys, assets, extra, message):
    item = _item(folder, assets, name="bad.json")
    out = tmp_path / "x.geojson"
    assert main(["detect", str(item), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("geo-hires: error:") and message in err[-1], err
    assert not out.exists()


def test_confined_items_refuse_assets_outside_their_folder(folder, tmp_path):
    from geo_hires.config import ReadConfig
    from geo_hires.errors import ConfigError
    from geo_hires.scene.stac import open_input

    sub = folder / "sub"
    sub.mkdir(exist_ok=True)
    item = _item(sub, {"visual": {"href": "../scene_rgb.tif"}})
    scene, prov = open_input(item)  # the CLI follows it
    assert Path(scene.path) == (folder / "scene_rgb.tif").resolve() and prov is not None
    with pytest.raises(ConfigError, match="outside the item's folder"):
        open_input(item, ReadConfig(stac_confine=True))
    with pytest.raises(ConfigError, match=r"^asset applies to STAC items"):
        open_input(folder / "scene_rgb.tif", ReadConfig(stac_asset="visual"))


def test_what_counts_as_a_stac_item(folder, tmp_path):
    from geo_hires.scene.stac import is_stac_item

    item = _item(folder, {"visual": {"href": "scene_rgb.tif"}}, name="upper.JSON")
    assert is_stac_item(item)
    for name, text in (
        ("collection.json", json.dumps({"type": "FeatureCollection", "stac_version": "1.0.0"})),
        ("plain.json", json.dumps({"type": "Feature", "geometry": None})),  # GeoJSON, not STAC
        ("list.json", "[1, 2]"),
        ("broken.json", "{not json"),
        ("item.geojson", item.read_text()),  # the right content, another extension
    ):
        (tmp_path / name).write_text(text)
        assert not is_stac_item(tmp_path / name), name
    (tmp_path / "dir.json").mkdir()
    assert not is_stac_item(tmp_path / "dir.json") and not is_stac_item(tmp_path / "none.json")
    assert not is_stac_item(folder / "scene_rgb.tif")


def test_the_rgb_asset_and_its_bands_in_every_spelling_of_band_metadata(tmp_path):
    from geo_hires.scene.stac import resolve_item

    stac11 = [{"name": "B8", "eo:common_name": "nir"}, {"name": "B4", "eo:common_name": "Red"},
              {"name": "B3", "common_name": "green"}, {"name": "blue"}]  # fmt: skip
    rgb = [{"common_name": c} for c in ("red", "green", "blue")]
    item = _item(
        tmp_path,
        {
            "meta": {"href": "m.xml", "type": "application/xml", "eo:bands": rgb},  # not a raster
            "thumb": {"href": "t.png", "type": "image/png", "eo:bands": rgb[:2]},  # no blue
            "stack": {"href": "s.tif", "bands": stac11},  # STAC 1.1 bands, no media type
            "later": {"href": "l.tif", "type": "image/tiff", "eo:bands": rgb},
        },
    )
    ref = resolve_item(item)
    assert ref.asset_key == "stack" and ref.bands == (2, 3, 4)
    assert ref.path == str((tmp_path / "s.tif").resolve()) and ref.item_id == "S2X_20260501_T33TVL"
    assert ref.collection == "synthetic-l2a"
    assert resolve_item(item, asset="meta").bands == (1, 2, 3)  # named: taken as it is
    assert resolve_item(item, asset="thumb").bands is None
    jp2 = _item(tmp_path, {"x": {"href": "x.jp2", "type": "image/jp2", "eo:bands": rgb},
                           "visual": {"href": "v.tif"}}, name="v.json")  # fmt: skip
    assert resolve_item(jp2).asset_key == "visual"  # the visual key wins over band metadata
    del_visual = _item(tmp_path, {"x": {"href": "x.jp2", "type": "image/jp2", "eo:bands": rgb}},
                       name="jp2.json")  # fmt: skip
    assert resolve_item(del_visual).asset_key == "x"
    cog = "image/tiff; application=geotiff; profile=cloud-optimized"  # pystac's MediaType.COG
    analytic = _item(tmp_path, {"analytic": {"href": "a.tif", "type": cog, "eo:bands": rgb}},
                     name="cog.json")  # fmt: skip
    assert resolve_item(analytic).asset_key == "analytic"
    absolute = _item(tmp_path, {"visual": {"href": f"file://{tmp_path / 'a.tif'}"}}, name="f.json")
    assert resolve_item(absolute, confine=True).path == str((tmp_path / "a.tif").resolve())


def test_bands_given_by_the_caller_win_over_the_items(folder, tmp_path):
    from geo_hires.config import ReadConfig
    from geo_hires.scene.stac import open_input

    item = _item(folder, {"stack": {"href": "scene_bgrn.tif", "eo:bands": BANDS}}, name="b.json")
    scene, prov = open_input(item)
    assert scene.bands == (3, 2, 1) and prov == {
        "item": "S2X_20260501_T33TVL", "collection": "synthetic-l2a", "asset": "stack"}  # fmt: skip
    scene, _ = open_input(item, ReadConfig(bands=(1, 2, 3)))
    assert scene.bands == (1, 2, 3)
    scene, prov = open_input(folder / "scene_rgb.tif")
    assert prov is None and scene.path == str(folder / "scene_rgb.tif")


def test_remote_unreadable_and_outside_assets_and_a_plain_rasters_read_config(folder, tmp_path):
    from geo_hires.config import ReadConfig
    from geo_hires.errors import ConfigError, SceneReadError
    from geo_hires.scene.stac import open_input, resolve_item

    remote = _item(tmp_path, {"visual": {"href": "https://example.com/v.tif"}}, name="r.json")
    assert resolve_item(remote).path == "https://example.com/v.tif"  # read with range requests
    with pytest.raises(ConfigError, match=r"lies outside the item's folder"):
        resolve_item(remote, confine=True)  # a service's item may not point elsewhere
    ftp = _item(tmp_path, {"visual": {"href": "ftp://example.com/v.tif"}}, name="f.json")
    with pytest.raises(ConfigError, match=r"read only from files, s3:// or https://"):
        resolve_item(ftp)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0"}))  # no id, assets
    with pytest.raises(SceneReadError, match=r"broken\.json is not a readable STAC item \("):
        resolve_item(broken)
    outside = _item(tmp_path, {"visual": {"href": str(folder / "scene_rgb.tif")}}, name="o.json")
    assert resolve_item(outside).path == str(folder / "scene_rgb.tif")  # not confined by default
    scene, prov = open_input(folder / "scene_bgrn.tif", ReadConfig(bands=(3, 2, 1)))
    assert prov is None and scene.bands == (3, 2, 1)  # a raster gets the caller's config


def test_eval_and_convert_take_an_item_and_its_asset_like_detect(folder, tmp_path, capsys):
    item = _item(folder, {"stack": {"href": "scene_bgrn.tif", "eo:bands": BANDS}}, "item3.json")
    truth = tmp_path / "truth.csv"
    truth.write_text("xmin,ymin,xmax,ymax,label\n10,10,40,40,Airplane\n")
    out = tmp_path / "t.geojson"
    assert (
        main(["convert", str(truth), "--scene", str(item), "--asset", "stack", "-o", str(out)]) == 0
    )
    assert len(json.loads(out.read_text())["features"]) == 1  # placed through the item's asset
    assert (
        main(["eval", str(out), str(truth), "--scene", str(item), "--asset", "stack", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ap50"] == pytest.approx(1.0)
