"""``geo-hires diff``: synthetic pairs with known moves across CRS and GSD, and a real scene
against the same scene with aircraft cut out."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geo_hires.cli import main
from geo_hires.errors import ConfigError
from geo_hires.evaluate.diff import DiffConfig, diff_layers, summary


def _boxes(centres, size, crs, cls):
    geoms = [
        shapely.box(x - size / 2, y - size / 2, x + size / 2, y + size / 2) for x, y in centres
    ]
    return gpd.GeoDataFrame({"class": [cls] * len(geoms), "score": 0.9}, geometry=geoms, crs=crs)


def _pair():
    """OLD in UTM 31N; NEW in Web Mercator (another CRS, other units): aircraft 0-3 moved by
    1.5 m (persist), 4 gone, one new; cars 0 moved 2.5 m (IoU 0.23: persists by distance),
    1 moved 10 m
    (gone + new), 2 unmoved."""
    x0, y0 = 600_000.0, 5_400_000.0
    planes = [(x0 + 100 * k, y0) for k in range(5)]
    cars = [(x0 + 30 * k, y0 + 200) for k in range(3)]
    old = gpd.GeoDataFrame(
        gpd.pd.concat([_boxes(planes, 40, 32631, "Airplane"), _boxes(cars, 4, 32631, "Car")]),
        crs=32631,
    )
    new_planes = [(x + 1.5, y) for x, y in planes[:4]] + [(x0 + 1000, y0)]
    new_cars = [(cars[0][0] + 2.5, cars[0][1]), (cars[1][0], cars[1][1] + 10), cars[2]]
    new = gpd.GeoDataFrame(
        gpd.pd.concat(
            [_boxes(new_planes, 40, 32631, "Airplane"), _boxes(new_cars, 4, 32631, "Car")]
        ),
        crs=32631,
    ).to_crs(3857)
    return old, new


def test_known_moves_across_crs_are_classified():
    old, new = _pair()
    changes = diff_layers(old, new)
    assert summary(changes) == {
        "Airplane": {"persisted": 4, "appeared": 1, "disappeared": 1},
        "Car": {"persisted": 2, "appeared": 1, "disappeared": 1},
    }
    moved = changes[(changes["class"] == "Airplane") & (changes["change"] == "persisted")]
    assert moved["shift_m"].to_list() == pytest.approx([1.5] * 4, abs=0.01)
    assert moved["iou"].min() > 0.9
    # the small car that moved 2.5 m overlaps little but matches by its centre
    car = changes[(changes["class"] == "Car") & (changes["change"] == "persisted")]
    assert sorted(car["shift_m"]) == pytest.approx([0.0, 2.5], abs=0.01)


def test_thresholds_decide():
    old, new = _pair()
    strict = diff_layers(old, new, DiffConfig(iou=0.99, max_shift_m=0.5))
    assert summary(strict)["Airplane"]["persisted"] == 0
    assert summary(strict)["Car"]["persisted"] == 1  # only the unmoved one
    assert summary(diff_layers(old, new, DiffConfig(max_shift_m=11)))["Car"]["persisted"] == 3


def test_diff_command_writes_changes_and_prints_the_summary(tmp_path, capsys):
    old, new = _pair()
    old.to_file(tmp_path / "old.gpkg")
    new.to_file(tmp_path / "new.geojson")
    out = tmp_path / "change.geojson"
    assert (
        main(["diff", str(tmp_path / "old.gpkg"), str(tmp_path / "new.geojson"), "-o", str(out)])
        == 0
    )
    fc = json.loads(out.read_text())
    assert fc["geo_hires"]["summary"]["Car"] == {"persisted": 2, "appeared": 1, "disappeared": 1}
    assert {f["properties"]["change"] for f in fc["features"]} == {
        "persisted",
        "appeared",
        "disappeared",
    }
    first = out.read_bytes()
    assert (
        main(["diff", str(tmp_path / "old.gpkg"), str(tmp_path / "new.geojson"), "-o", str(out)])
        == 0
    )
    assert out.read_bytes() == first
    assert "Airplane" in capsys.readouterr().out
    assert main(["diff", str(tmp_path / "nope.geojson"), str(out), "-o", str(out)]) == 2


def _cut_out(scene, dets, out):
    """The scene with the aircraft whose centre lies in the west half painted over with the
    median of a ring around each (masked the way a cloud or an inpainting would)."""
    with rasterio.open(scene) as src:
        img, profile = src.read(), src.profile
        inv = ~src.transform
        mid_x = (src.bounds.left + src.bounds.right) / 2
    gone = 0
    for geom in dets.geometry:
        if geom.centroid.x >= mid_x:
            continue
        gone += 1
        (c0, r0), (c1, r1) = (
            inv * (geom.bounds[0], geom.bounds[3]),
            inv * (geom.bounds[2], geom.bounds[1]),
        )
        c0, r0, c1, r1 = int(c0) - 4, int(r0) - 4, int(np.ceil(c1)) + 4, int(np.ceil(r1)) + 4
        ring = img[:, max(r0 - 6, 0) : r1 + 6, max(c0 - 6, 0) : c1 + 6]
        img[:, max(r0, 0) : r1, max(c0, 0) : c1] = np.median(
            ring.reshape(img.shape[0], -1), axis=1
        )[:, None, None]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(img)
    return gone


def test_geoparquet_layers_as_detect_writes_them_are_read(tmp_path, capsys):
    old, new = _pair()
    old.to_parquet(tmp_path / "old.parquet")
    old.to_parquet(tmp_path / "old.GeoParquet")  # the other name GeoParquet goes by
    assert main(["diff", str(tmp_path / "old.GeoParquet"), str(tmp_path / "old.parquet"),
                 "-o", str(tmp_path / "same.geojson")]) == 0  # fmt: skip
    assert "disappeared" in capsys.readouterr().out
    new.to_file(tmp_path / "new.geojson")
    out = tmp_path / "change.geojson"
    assert main(["diff", str(tmp_path / "old.parquet"), str(tmp_path / "new.geojson"),
                 "-o", str(out)]) == 0  # fmt: skip
    assert "Airplane" in capsys.readouterr().out
    assert summary(gpd.read_file(out)) == summary(diff_layers(old, new))
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert main(["diff", str(tmp_path / "bad.parquet"), str(tmp_path / "new.geojson"),
                 "-o", str(out)]) == 2  # fmt: skip
    assert "cannot read the detection layer" in capsys.readouterr().err


def test_real_scene_against_itself_with_aircraft_cut_out(demo_crop, tmp_path):
    scene = demo_crop(0, 0, 1536, 1024)
    before = tmp_path / "before.geojson"
    assert main(["detect", str(scene), "-o", str(before), "--score-threshold", "0.3"]) == 0
    dets = gpd.read_file(before).to_crs(32631)
    cut = tmp_path / "cut.tif"
    gone = _cut_out(scene, dets, cut)
    after = tmp_path / "after.geojson"
    assert main(["detect", str(cut), "-o", str(after), "--score-threshold", "0.3"]) == 0
    out = tmp_path / "change.geojson"
    assert main(["diff", str(before), str(after), "-o", str(out)]) == 0
    counts = json.loads(out.read_text())["geo_hires"]["summary"]["Airplane"]
    kept = len(dets) - gone
    assert gone >= 3 and kept >= 3
    assert counts["disappeared"] >= gone - 1 and counts["persisted"] >= kept - 1
    assert counts["appeared"] <= 1


def test_results_in_pixels_or_with_empty_classes_are_said_or_handled(tmp_path, capsys):
    """GDAL calls every GeoJSON WGS84, so ``detect``'s pixel-space results (a scene without a
    CRS) looked like degrees; a GIS export may leave classes empty."""
    box = {"type": "Polygon", "coordinates": [[[1000, 200], [1010, 200], [1010, 210],
                                               [1000, 210], [1000, 200]]]}  # fmt: skip
    feat = {"type": "Feature", "geometry": box, "properties": {"class": "Airplane"}}
    doc = {"type": "FeatureCollection", "features": [feat], "geo_hires": {"pixel_space": True}}
    (tmp_path / "a.geojson").write_text(json.dumps(doc))
    rc = main(["diff", str(tmp_path / "a.geojson"), str(tmp_path / "a.geojson"),
               "-o", str(tmp_path / "c.geojson")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no CRS (pixel-space results" in err and "Traceback" not in err
    old, new = _pair()
    old.loc[0, "class"] = None
    out = diff_layers(old, new)
    assert "object" in set(out["class"]) and len(out) > 0


@pytest.mark.parametrize(
    "bad", [{"iou": 0.0}, {"iou": 1.5}, {"small_m": -1.0}, {"max_shift_m": 0.0},
            {"iou": math.nan}, {"small_m": math.nan}, {"max_shift_m": math.nan}],
)  # fmt: skip
def test_match_settings_out_of_range_or_nan_are_refused(bad):
    said = r"^diff: iou in \(0, 1\], small_m >= 0 and max_shift_m > 0$"
    with pytest.raises(ConfigError, match=said):
        DiffConfig(**bad)
    assert DiffConfig(iou=1.0, small_m=0.0, max_shift_m=0.01).iou == 1.0  # the bounds hold
