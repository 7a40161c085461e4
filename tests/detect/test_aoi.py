"""Areas of interest: only blocks whose core touches the AOI are read, only detections centred
in it are kept, the AOI is in the provenance, and it is part of the resume identity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic

SPEC = SynthSpec(width=2400, height=1800, seed=12, density=Density.DENSE)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aoi") / "scene.tif"
    write_synthetic(path, SPEC)
    return path


def _aoi_file(folder: Path, pixel_boxes, crs: str = "EPSG:4326", name: str = "aoi.gpkg") -> Path:
    """Polygons given as pixel boxes of the scene, written in another CRS (WGS84 by default)."""
    to = Transformer.from_crs("EPSG:32633", crs, always_xy=True)
    polys = []
    for x0, y0, x1, y1 in pixel_boxes:
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        pts = [to.transform(*(SPEC.transform @ p)) for p in ring]
        polys.append(shapely.Polygon(pts))
    path = folder / name
    frame = gpd.GeoDataFrame(
        {"name": [f"a{i}" for i in range(len(polys))]}, geometry=polys, crs=crs
    )
    frame.to_parquet(path) if path.suffix == ".parquet" else frame.to_file(path)
    return path


def _centres_px(geojson: Path) -> np.ndarray:
    to = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    inv = ~SPEC.transform
    out = []
    for f in json.loads(geojson.read_text())["features"]:
        ring = np.array(f["geometry"]["coordinates"][0][:4])
        x, y = to.transform(ring[:, 0], ring[:, 1])
        out.append(inv @ (float(np.mean(x)), float(np.mean(y))))
    return np.array(out).reshape(-1, 2)


def test_aoi_scans_less_and_keeps_what_lies_inside(scene, tmp_path, capsys):
    boxes = [(100, 150, 700, 650), (1500, 900, 2100, 1500)]  # two airports' worth
    aoi = _aoi_file(tmp_path, boxes)
    full, part = tmp_path / "full.geojson", tmp_path / "part.geojson"
    common = ["--block", "256", "--score-threshold", "0.2", "--model", "aircraft_lsn"]  # the levels
    assert main(["detect", str(scene), "-o", str(full), *common]) == 0
    capsys.readouterr()
    assert main(["detect", str(scene), "-o", str(part), "--aoi", str(aoi), *common]) == 0
    line = capsys.readouterr().out
    assert "AOI:" in line and "% saved" in line
    counts = re.search(
        r": (\d+) windows \[full: (\d+) of \d+ blocks \(x1\), coarse: (\d+) of", line
    )
    assert counts, line
    total, *each = (int(n) for n in counts.groups())
    assert total == sum(each)  # what was scanned, not what the AOI left out
    inside = shapely.union_all([shapely.box(*b) for b in boxes])
    centres = _centres_px(part)
    assert len(centres) >= 5
    assert shapely.intersects_xy(inside.buffer(0.5), centres[:, 0], centres[:, 1]).all()
    full_centres = _centres_px(full)
    full_in = shapely.intersects_xy(inside.buffer(-0.5), full_centres[:, 0], full_centres[:, 1])
    # every detection of the full run centred (clearly) inside the AOI is found by the AOI run
    full_feats = json.loads(full.read_text())["features"]
    want = {json.dumps(f["geometry"]) for f, ok in zip(full_feats, full_in, strict=True) if ok}
    got = {json.dumps(f["geometry"]) for f in json.loads(part.read_text())["features"]}
    assert want and want <= got
    prov = json.loads(part.read_text())["geo_hires"]["aoi"]
    assert prov["source"] == "aoi.gpkg" and prov["geometry"]["type"] == "MultiPolygon"
    parts = shapely.geometry.shape(prov["geometry"]).geoms
    assert all(p.exterior.is_ccw for p in parts)  # RFC 7946 (set_precision made them clockwise)
    assert 0 < prov["pixels_scanned"] < 0.5 * 2 * SPEC.width * SPEC.height  # both levels


def test_aoi_is_part_of_the_resume_identity(scene, tmp_path):
    from geo_hires.aoi import load_aoi
    from geo_hires.detect.journal import journal_for
    from geo_hires.detect.options import DetectConfig
    from geo_hires.models.bundle import load_bundle
    from geo_hires.scene import open_scene

    s = open_scene(scene)
    model = load_bundle("aircraft_lsn")
    a = load_aoi(_aoi_file(tmp_path, [(0, 0, 500, 500)], name="a.gpkg"), s)
    b = load_aoi(_aoi_file(tmp_path, [(0, 0, 600, 500)], name="b.gpkg"), s)
    ids = [
        journal_for(tmp_path / "o.geojson", s, model, DetectConfig(), x).identity
        for x in (a, b, None)
    ]
    assert len({json.dumps(i, sort_keys=True) for i in ids}) == 3


def test_aoi_in_a_projected_crs_and_as_geojson_object(scene, tmp_path):
    from geo_hires.aoi import load_aoi
    from geo_hires.scene import open_scene

    s = open_scene(scene)
    utm = load_aoi(_aoi_file(tmp_path, [(10, 20, 110, 220)], crs="EPSG:32633"), s)
    assert utm.pixels.equals_exact(shapely.box(10, 20, 110, 220), tolerance=1e-6) or (
        shapely.normalize(utm.pixels).equals_exact(
            shapely.normalize(shapely.box(10, 20, 110, 220)), 1e-6
        )
    )
    # GeoParquet, as `detect -o x.parquet` writes it (GDAL's wheel has no Parquet driver)
    parquet = _aoi_file(tmp_path, [(10, 20, 110, 220)], crs="EPSG:32633", name="a.parquet")
    assert load_aoi(parquet, s).pixels.equals(utm.pixels)
    obj = {"type": "Feature", "properties": {}, "geometry": utm.wgs84}
    again = load_aoi(obj, s)
    assert again.pixels.symmetric_difference(utm.pixels).area < 1.0  # 1e-8 deg on the way


def test_aoi_outside_the_scene_warns_and_gives_an_empty_result(scene, tmp_path, capsys):
    aoi = _aoi_file(tmp_path, [(5000, 5000, 5200, 5200)])
    out = tmp_path / "o.geojson"
    assert main(["detect", str(scene), "-o", str(out), "--aoi", str(aoi)]) == 0
    said = capsys.readouterr()
    assert "does not intersect" in said.err
    assert " s, no scan, AOI: 0.0 of " in said.out  # was '3451.1 MP/s': the scene over no time
    doc = json.loads(out.read_text())
    assert doc["features"] == [] and doc["geo_hires"]["aoi"]["pixels_scanned"] == 0


def test_bad_aois_are_one_line_errors(scene, tmp_path, capsys, write_tif):
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(15, 45)], crs="EPSG:4326").to_file(points)
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_text("not a vector file")
    no_crs_scene = write_tif("plain.tif", np.zeros((3, 64, 64), np.uint8), crs=None)
    aoi = _aoi_file(tmp_path, [(0, 0, 10, 10)])
    for scene_path, aoi_path, message in (
        (scene, tmp_path / "missing.gpkg", "missing.gpkg not found; check the path"),
        (scene, points, "holds no polygon"),
        (scene, garbage, "cannot read the AOI"),
        (no_crs_scene, aoi, "has no CRS, so an AOI cannot be placed"),
    ):
        out = tmp_path / "x.geojson"
        assert main(["detect", str(scene_path), "-o", str(out), "--aoi", str(aoi_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("geo-hires: error:") and message in err[-1], err
        assert not out.exists()


def test_windows_touching_the_aoi_and_detections_centred_in_it_boundaries_included():
    from rasterio.windows import Window

    from geo_hires.aoi import AreaOfInterest
    from geo_hires.detections import PixelDetections

    aoi = AreaOfInterest(pixels=shapely.box(100, 200, 300, 400), wgs84={}, source="t")
    touches = aoi.touches_window()
    assert touches(Window(0, 0, 100, 200))  # meets the AOI's corner
    assert not touches(Window(0, 0, 99, 200)) and not touches(Window(0, 0, 100, 199))
    assert touches(Window(300, 400, 10, 10))  # starts on its far corner
    assert not touches(Window(301, 0, 10, 1000)) and not touches(Window(0, 401, 1000, 10))
    boxes = [
        (90, 290, 110, 310),  # centre (100, 300): on the edge, kept
        (80, 290, 118, 310),  # centre (99, 300): overlaps the AOI, centred outside
        (290, 390, 310, 410),  # centre (300, 400): the far corner, kept
        (190, 392, 210, 410),  # centre (200, 401): outside
        (0, 0, 400, 600),  # centre (200, 300): kept, though the box reaches far out
    ]
    dets = PixelDetections.build(boxes, [0.1, 0.2, 0.3, 0.4, 0.5], [0] * 5, class_names=("a",))
    assert aoi.keep(dets).scores.tolist() == [0.1, 0.3, 0.5]
    none = dets.take(np.zeros(5, bool))
    assert aoi.keep(none) is none
    assert aoi.provenance() == {"source": "t", "geometry": {}}


def test_aoi_digest_is_16_hex_digits_of_the_geometry_at_a_thousandth_of_a_pixel():
    from geo_hires.aoi import AreaOfInterest

    def digest(*box: float) -> str:
        return AreaOfInterest(pixels=shapely.box(*box), wgs84={}, source="x").digest

    d = digest(100, 200, 300, 400)
    assert len(d) == 16 and int(d, 16) >= 0
    assert digest(100.0001, 200, 300, 400) == d  # below the precision: the same AOI
    assert digest(100.002, 200, 300, 400) != d  # a thousandth is not below it


def test_aoi_geojson_objects_of_every_kind_and_invalid_ones_refused(scene):
    from geo_hires.aoi import load_aoi
    from geo_hires.errors import ConfigError
    from geo_hires.scene import open_scene

    s = open_scene(scene)
    to = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)

    def ring(x0, y0, x1, y1):
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        return [list(to.transform(*(SPEC.transform @ p))) for p in pts]

    geom = {"type": "Polygon", "coordinates": [ring(10, 20, 110, 220)]}
    multi = {"type": "MultiPolygon",
             "coordinates": [[ring(10, 20, 110, 220)], [ring(500, 500, 600, 550)]]}  # fmt: skip
    feature = {"type": "Feature", "properties": {}, "geometry": geom}
    point = {"type": "Feature", "properties": {},
             "geometry": {"type": "Point", "coordinates": [15, 45]}}  # fmt: skip
    collection = {"type": "FeatureCollection", "features": [feature, point]}  # the point is left
    box = shapely.box(10, 20, 110, 220)
    for obj, want in ((geom, box), (feature, box), (collection, box),
                      (multi, box.union(shapely.box(500, 500, 600, 550)))):  # fmt: skip
        aoi = load_aoi(obj, s)
        assert aoi.source == "request"
        assert aoi.pixels.symmetric_difference(want).area < 1.0
    assert load_aoi(multi, s).wgs84["type"] == "MultiPolygon"
    for bad in ({"type": "Polygon"}, {"type": "Nonsense", "coordinates": []},
                {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}):  # fmt: skip
        with pytest.raises(ConfigError, match="the AOI is not valid GeoJSON"):
            load_aoi(bad, s)
    latitude_first = {"type": "Polygon", "coordinates": [[[3, 95], [4, 95], [4, 96], [3, 95]]]}
    with pytest.raises(ConfigError, match=r"latitude 95\.\.96, outside .* give longitude first"):
        load_aoi(latitude_first, s)
    nan = {"type": "Polygon", "coordinates": [[[3, 45], [4, 45], [4, float("nan")], [3, 45]]]}
    with pytest.raises(ConfigError, match="coordinates that are not numbers"):
        load_aoi(nan, s)


def test_aoi_parts_are_named_from_their_properties_and_counted_per_class(scene):
    from geo_hires.aoi import PartCount, load_aoi
    from geo_hires.detections import PixelDetections
    from geo_hires.scene import open_scene

    s = open_scene(scene)
    to = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)

    def poly(x0, y0, x1, y1):
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        return {"type": "Polygon", "coordinates": [[list(to.transform(*(SPEC.transform @ p)))
                                                     for p in pts]]}  # fmt: skip

    def feature(props, *box):
        return {"type": "Feature", "properties": props, "geometry": poly(*box)}

    collection = {"type": "FeatureCollection", "features": [
        feature({"name": "north", "id": "n1"}, 10, 20, 110, 220),  # the name wins over the id
        feature({"id": "p2"}, 500, 500, 600, 550),  # no name: the id
        feature({"name": None}, 700, 700, 800, 800),  # neither (a missing id is NaN): position
    ]}  # fmt: skip
    aoi = load_aoi(collection, s)
    assert [name for name, _ in aoi.parts] == ["north", "p2", "3"]
    assert aoi.parts[1][1].symmetric_difference(shapely.box(500, 500, 600, 550)).area < 1.0
    one = load_aoi(feature({"name": "apron"}, 10, 20, 110, 220), s)  # a Feature keeps its name
    assert [name for name, _ in one.parts] == ["apron"]
    boxes = [(40, 90, 60, 110), (50, 100, 70, 120), (540, 510, 560, 530), (890, 890, 910, 910)]
    dets = PixelDetections.build(boxes, [0.9] * 4, [0, 1, 0, 0], class_names=("a", "b"))
    assert aoi.counts(dets) == (
        PartCount(0, "north", "a", 1), PartCount(0, "north", "b", 1),
        PartCount(1, "p2", "a", 1), PartCount(1, "p2", "b", 0),
        PartCount(2, "3", "a", 0), PartCount(2, "3", "b", 0),
    )  # fmt: skip
    assert [c.count for c in aoi.counts(dets.take(np.zeros(4, bool)))] == [0] * 6
    # boxes across north's edge: a box counts where its centre is, whichever corners are inside
    across = [(100, 30, 140, 50), (80, 200, 100, 250),  # centre outside, top-left corner inside
              (80, 30, 120, 50), (40, 190, 60, 230)]  # centre inside, a corner outside  # fmt: skip
    edge = PixelDetections.build(across, [0.9] * 4, [0] * 4, class_names=("a",))
    assert aoi.counts(edge)[0] == PartCount(0, "north", "a", 2)


def test_aoi_files_name_their_source_and_only_an_aoi_off_the_scene_warns(scene, tmp_path):
    import warnings

    from geo_hires.aoi import AoiWarning, load_aoi
    from geo_hires.errors import ConfigError
    from geo_hires.scene import open_scene

    s = open_scene(scene)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the scene: no warning at all
        aoi = load_aoi(_aoi_file(tmp_path, [(10, 20, 110, 220)]), s)
    assert aoi.source == "aoi.gpkg" and [name for name, _ in aoi.parts] == ["a0"]
    far = _aoi_file(tmp_path, [(5000, 5000, 5100, 5100)], name="far.gpkg")
    with pytest.warns(AoiWarning, match=r"^the AOI far\.gpkg does not intersect scene\.tif"):
        load_aoi(far, s)
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "p.gpkg")
    with pytest.raises(ConfigError, match=r"^AOI p\.gpkg holds no polygon; give polygons"):
        load_aoi(tmp_path / "p.gpkg", s)
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(ConfigError, match=r"nocrs\.gpkg has no CRS; save it with one \(e\.g\."):
        load_aoi(tmp_path / "nocrs.gpkg", s)


@pytest.mark.parametrize(
    ("corner", "ok"),
    [((-180, 0), True), ((179, 0), True), ((0, -90), True), ((0, 89), True),
     ((-180.5, 0), False), ((179.5, 0), False), ((0, -90.5), False), ((0, 89.5), False)],
)  # fmt: skip
def test_aoi_longitudes_and_latitudes_are_checked_at_their_bounds(scene, corner, ok):
    from geo_hires.aoi import AoiWarning, load_aoi
    from geo_hires.errors import ConfigError
    from geo_hires.scene import open_scene

    x, y = corner
    ring = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]
    square = {"type": "Polygon", "coordinates": [ring]}
    if ok:
        with pytest.warns(AoiWarning, match="does not intersect"):  # far away, but valid
            load_aoi(square, open_scene(scene))
    else:
        with pytest.raises(ConfigError, match=r"outside -180\.\.180 and -90\.\.90"):
            load_aoi(square, open_scene(scene))
