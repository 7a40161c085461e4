"""Label formats: every reader, its columns and malformed input, map labels to pixels, and a
folder of per-scene label files (their scoring: test_labels_eval.py)."""

from __future__ import annotations

import json

import numpy as np
import pyproj
import pytest

from geo_hires.errors import LabelReadError
from geo_hires.labels import read_labels
from geo_hires.scene import open_scene

BOXES = [[10, 20, 40, 50, "car"], [100, 110, 160, 150, "plane"], [200, 10, 220, 30, "car"]]


def _write_formats(tmp_path):
    (tmp_path / "l.csv").write_text(
        "xmin,ymin,xmax,ymax,label\n" + "".join(f"{a},{b},{c},{d},{n}\n" for a, b, c, d, n in BOXES)
    )
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d, n in BOXES
    )
    (tmp_path / "l.xml").write_text(f"<annotation><filename>x.tif</filename>{objs}</annotation>")
    (tmp_path / "l.txt").write_text(
        "imagesource:test\ngsd:0.5\n"
        + "".join(f"{a} {b} {c} {b} {c} {d} {a} {d} {n} 0\n" for a, b, c, d, n in BOXES)
    )
    rows = "".join(
        f'{i},x.tif,"[({a}, {b}), ({c}, {b}), ({c}, {d}), ({a}, {d}), ({a}, {b})]",{n}\n'
        for i, (a, b, c, d, n) in enumerate(BOXES)
    )
    (tmp_path / "air.csv").write_text(
        "id,image_id,geometry,class\n" + rows + '9,y.tif,"[(0, 0), (1, 1)]",car\n'
    )
    return ["l.csv", "l.xml", "l.txt", "air.csv"]


def test_every_pixel_format_reads_the_same_boxes(tmp_path):
    for name in _write_formats(tmp_path):
        dets = read_labels(tmp_path / name, image="x.tif").to_pixels(None)
        assert dets.class_names == ("car", "plane"), name
        np.testing.assert_array_equal(
            dets.boxes, np.array([b[:4] for b in BOXES], float), err_msg=name
        )


def test_airbus_csv_with_several_images_needs_a_choice(tmp_path):
    _write_formats(tmp_path)
    with pytest.raises(LabelReadError, match=r"read_labels\(\.\.\., image=NAME\)$"):
        read_labels(tmp_path / "air.csv")


def test_a_pixel_csv_of_several_images_gives_each_its_own_boxes_and_none_of_the_others(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "tiles/a.tif,0,0,10,10,car\ntiles/a.tif,20,20,30,30,car\nb.tif,5,5,9,9,plane\n"
    )
    assert len(read_labels(path, image="a.tif").rings) == 2
    assert read_labels(path, image="b.tif").names == ("plane",)
    assert read_labels(path, image="empty.tif").rings == ()  # not a's or b's boxes
    with pytest.raises(LabelReadError, match="labels of 2 images; pick one image's labels: "):
        read_labels(path)


def test_pixel_csv_columns_class_or_name_score_and_none_and_a_word_for_a_coordinate(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("xmin,ymin,xmax,ymax,class,score\n1,2,5,6,car,0.25\n1,2,5,6,bus,\n")
    got = read_labels(path)
    assert got.names == ("car", "bus") and got.scores == (0.25, 1.0)  # empty: a label, 1
    path.write_text("name,xmin,ymin,xmax,ymax\nship,1,2,5,6\n")
    assert read_labels(path).names == ("ship",)
    path.write_text("xmin,ymin,xmax,ymax\n1,2,5,6\n")  # no class column: one class
    assert read_labels(path).names == ("object",)
    air = tmp_path / "air.csv"  # Airbus rows without a class column
    air.write_text('image_id,geometry\nx.tif,"[(0, 0), (4, 0), (4, 4), (0, 4), (0, 0)]"\n')
    assert read_labels(air, image="x.tif").names == ("object",)
    path.write_text("xmin,ymin,xmax,ymax,label\none,2,5,6,car\n")
    with pytest.raises(LabelReadError, match=r"l\.csv: non-numeric box coordinate"):
        read_labels(path)
    path.write_text("xmin,ymin,xmax,ymax,label\n")  # an image without objects
    assert read_labels(path).to_pixels(None).boxes.shape == (0, 4)
    path.write_text("x0,y0,x1,y1\n1,2,5,6\n")
    with pytest.raises(LabelReadError, match=r"l\.csv: CSV needs columns .* found \['x0', 'x1'"):
        read_labels(path)
    path.write_text("image_path,xmin,ymin,xmax,ymax\na.tif,1,2,5,6\nb.tif,1,2,5,6\n")
    with pytest.raises(LabelReadError, match=r"l\.csv holds labels of 2 images"):
        read_labels(path)
    air.write_text('image_id,geometry\na.tif,"[(0, 0), (1, 1)]"\nb.tif,"[(0, 0), (1, 1)]"\n')
    with pytest.raises(LabelReadError, match=r"air\.csv holds labels of 2 images"):
        read_labels(air)


def test_a_spreadsheets_bom_is_not_part_of_the_first_column_and_a_short_row_is_an_error(
    tmp_path,
):
    path = tmp_path / "excel.csv"  # "CSV UTF-8" from a spreadsheet starts with a BOM
    path.write_bytes("label,xmin,ymin,xmax,ymax\r\nplane,1,2,5,6\r\n".encode("utf-8-sig"))
    assert read_labels(path).names == ("plane",)  # not 'object': the label column is found
    path.write_text("xmin,ymin,xmax,ymax,label\n1,2,5,6,car\n1,2,3\n")
    with pytest.raises(LabelReadError, match="row 3 has fewer fields than the header"):
        read_labels(path)


def test_geojson_scores_that_are_null_mean_one_and_others_are_one_clear_error(tmp_path):
    import json

    box = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}

    def collection(score):
        feat = {"type": "Feature", "geometry": box, "properties": {"class": "car", "score": score}}
        (tmp_path / "p.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                         "features": [feat]}))  # fmt: skip
        return tmp_path / "p.geojson"

    assert read_labels(collection(None)).scores == (1.0,)  # a GIS export's empty field
    assert read_labels(collection("0.25")).scores == (0.25,)
    with pytest.raises(LabelReadError, match=r"feature 0 has score 'high'; give a number"):
        read_labels(collection("high"))


def test_geojson_features_class_ids_empty_and_broken_polygons(tmp_path):
    box = [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]

    def read(*features):
        doc = {"type": "FeatureCollection", "features": list(features),
               "geo_hires": {"pixel_space": True}}  # fmt: skip
        (tmp_path / "p.geojson").write_text(json.dumps(doc))
        return read_labels(tmp_path / "p.geojson")

    def feat(geometry, **props):
        return {"type": "Feature", "geometry": geometry, "properties": props}

    got = read(feat({"type": "Polygon", "coordinates": box}, **{"class": 0}),
               feat({"type": "Polygon", "coordinates": []}, **{"class": 1}),  # empty: no object
               None, feat(None), feat({"type": "Point", "coordinates": [1, 2]}))  # fmt: skip
    assert got.names == ("0",) and len(got.rings) == 1  # class id 0 is a name, not 'object'
    with pytest.raises(LabelReadError, match="feature 0 has unreadable coordinates"):
        read(feat({"type": "Polygon", "coordinates": [[1, 2, 3]]}))
    with pytest.raises(LabelReadError, match="'features' must be a list"):
        (tmp_path / "p.geojson").write_text('{"type": "FeatureCollection", "features": 3}')
        read_labels(tmp_path / "p.geojson")


def test_map_labels_on_a_scene_without_a_crs_are_refused(tmp_path, fixtures):
    import rasterio

    with rasterio.open(fixtures / "OSBS_029.tif") as src:
        data = src.read()
    png = tmp_path / "plain.png"
    with rasterio.open(png, "w", driver="PNG", width=data.shape[2], height=data.shape[1],
                       count=3, dtype="uint8") as dst:  # fmt: skip
        dst.write(data[:3])
    box = [[[-82.0, 29.7], [-81.99, 29.7], [-81.99, 29.71], [-82.0, 29.7]]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": box},
                "properties": {},
            }
        ],
    }
    (tmp_path / "t.geojson").write_text(json.dumps(doc))
    with pytest.raises(LabelReadError, match=r"plain\.png has no CRS"):
        read_labels(tmp_path / "t.geojson").to_pixels(open_scene(png))


def test_geojson_in_any_crs_lands_on_the_same_pixels(tmp_path, fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    truth = read_labels(fixtures / "OSBS_029.csv").to_pixels(scene)
    t = pyproj.Transformer.from_crs("EPSG:32617", "EPSG:3857", always_xy=True)
    feats = []
    for x0, y0, x1, y1 in truth.boxes:
        ring = [scene.transform @ p for p in [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]
        feats.append(
            {
                "type": "Feature",
                "properties": {"label": "Tree"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[list(t.transform(*p)) for p in ring]],
                },
            }
        )
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
        "features": feats,
    }
    (tmp_path / "m.geojson").write_text(json.dumps(doc))
    back = read_labels(tmp_path / "m.geojson").to_pixels(scene)
    np.testing.assert_allclose(back.boxes, truth.boxes, atol=1e-4)


def test_a_folder_of_labels_gives_each_scene_its_own_file_whatever_image_it_names(tmp_path):
    from geo_hires.labels import labels_for

    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "s0.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\ns0.png,0,0,9,9,car\n")
    (folder / "s1.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\na.tif,0,0,9,9,car\nb.tif,1,1,5,5,car\n"
    )
    assert labels_for(tmp_path / "s0.tif", folder).names == ("car",)  # its file: .png or not
    with pytest.raises(LabelReadError, match="labels of 2 images"):
        labels_for(tmp_path / "s1.tif", folder)
    (folder / "s0.a.csv").write_text("xmin,ymin,xmax,ymax,label\n0,0,9,9,bus\n")  # s0.a's
    (folder / "s0.jpg").write_bytes(b"\xff\xd8")  # an image kept beside its labels
    assert labels_for(tmp_path / "s0.tif", folder).names == ("car",)
    assert labels_for(tmp_path / "s0.a.tif", folder).names == ("bus",)
    import geopandas as gpd
    import shapely

    box = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    (folder / "s2.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": box, "properties": {"class": "car"}}]}))  # fmt: skip
    gpd.GeoDataFrame({"class": ["detected"]}, geometry=[shapely.box(0, 0, 1, 1)]).to_file(
        folder / "s2.fgb", driver="FlatGeobuf", engine="pyogrio"
    )  # detect's output beside the truth: 'fgb' sorted before 'geojson'
    assert labels_for(tmp_path / "s2.tif", folder).names == ("car",)


def test_on_a_scene_only_its_objects_count_clipped_to_its_edges(tmp_path, fixtures, capsys):
    """A label file shared by several scenes holds the others' objects: they are not this
    scene's misses (eval) nor objects on pixels it lacks (training); one across its edge is
    clipped, as detections are."""
    from geo_hires.cli import main

    scene = open_scene(fixtures / "OSBS_029.tif")  # 400 x 400
    rows = [
        "10,20,40,50,Tree",
        "390,100,420,130,Tree",
        "500,20,540,50,Bus",
        "-30,-30,-1,-1,Tree",
        "-10,5,0,9,Tree",
        "400,5,410,9,Tree",
        "5,-10,9,0,Tree",
        "5,400,9,410,Tree",
    ]  # touch
    (tmp_path / "t.csv").write_text("xmin,ymin,xmax,ymax,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "p.csv").write_text(
        "xmin,ymin,xmax,ymax,label\n" + rows[0] + "\n390,100,400,130,Tree\n"
    )
    labels = read_labels(tmp_path / "t.csv")
    assert labels.to_pixels(scene).boxes.tolist() == [[10, 20, 40, 50], [390, 100, 400, 130]]
    assert len(labels.to_oriented(scene)) == 2 and len(labels.to_pixels(None)) == 8
    (tmp_path / "in.csv").write_text("xmin,ymin,xmax,ymax,label\n-10,5,0.5,9,T\n5,-10,9,0.5,T\n")
    assert read_labels(tmp_path / "in.csv").to_pixels(scene).boxes.tolist() == [
        [0, 5, 0.5, 9], [5, 0, 9, 0.5]]  # half a pixel on the scene: on it  # fmt: skip
    argv = ["eval", str(tmp_path / "p.csv"), str(tmp_path / "t.csv"), "--json"]
    assert main([*argv, "--scene", str(fixtures / "OSBS_029.tif")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recall"] == 1.0 and result["ap50"] == 1.0
    assert set(result["per_class"]) == {"Tree"}  # the bus lies off the scene: no row of 0s
    from geo_hires.train.chips import load_labelled

    images, _ = load_labelled([fixtures / "OSBS_029.tif"], tmp_path / "t.csv", oriented=True)
    assert images[0].boxes.tolist() == [[10, 20, 40, 50], [390, 100, 400, 130]]
    assert images[0].corners is not None and len(images[0].corners) == 2


def test_malformed_label_files_are_one_clear_error_each(tmp_path):
    """Each was a traceback (or, for points and YOLO lines, an empty truth scored 0 silently)."""
    ring = [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]

    def geojson(features, **extra):
        (tmp_path / "p.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": features, **extra})
        )
        return tmp_path / "p.geojson"

    poly = {"type": "Polygon", "coordinates": [ring]}
    cases = {
        geojson([{"geometry": poly, "properties": [1]}]): "'properties' must be a JSON object",
        geojson([{"geometry": "POLYGON"}]): "'geometry' must be a JSON object",
        geojson([], geo_hires=[1]): "'geo_hires' must be a JSON object",
        geojson([{"geometry": {"type": "Polygon", "coordinates": [[[]]]}}]): "unreadable coord",
        geojson([{"geometry": {"type": "Point", "coordinates": [1, 2]}}]): "no polygon .Point",
    }
    for path, message in cases.items():
        with pytest.raises(LabelReadError, match=message):
            read_labels(path)
    props = [{"class": float("nan")}, {"class": 1.0}, {"class": float("nan"), "label": "car"},
             {"class": ""}]  # fmt: skip
    got = read_labels(geojson([{"geometry": poly, "properties": p} for p in props]))
    assert got.names == ("object", "1", "car", "object")  # a GIS's float id is the integer's
    z = {"type": "Polygon", "coordinates": [[[x, y, 7.0] for x, y in ring]]}  # a height: ignored
    assert read_labels(geojson([{"geometry": z}])).rings[0].tolist() == ring
    for body, message in [
        ('i,image_id,geometry,class\n0,x.tif,"5",car\n', "unreadable geometry"),
        ('i,image_id,geometry,class\n0,x.tif,"[]",car\n', "unreadable geometry"),
        ('i,image_id,geometry,class\n0,x.tif,"[(5,)]",car\n', "unreadable geometry"),
        ("xmin,ymin,xmax,ymax,label,score\n1,2,3,4,car,high\n", "non-numeric score"),
    ]:
        (tmp_path / "l.csv").write_text(body)
        with pytest.raises(LabelReadError, match=message):
            read_labels(tmp_path / "l.csv")
    (tmp_path / "l.csv").write_bytes(
        "xmin,ymin,xmax,ymax,label\n1,2,3,4,Flugzeug\xe4\n".encode("latin-1")
    )
    with pytest.raises(LabelReadError, match=r"not UTF-8 text.*save it as UTF-8"):
        read_labels(tmp_path / "l.csv")
    (tmp_path / "d.txt").write_text("1 2 9 2 9 8 1 8 car\n")  # no "difficult" column
    assert read_labels(tmp_path / "d.txt").names == ("car",)
    (tmp_path / "d.txt").write_text("")
    assert read_labels(tmp_path / "d.txt").rings == ()  # an image without objects
    (tmp_path / "y.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelReadError, match="look like YOLO labels"):
        read_labels(tmp_path / "y.txt")


def test_detects_vector_outputs_read_as_labels(tmp_path, fixtures):
    from geo_hires.evaluate import common_frame, evaluate
    from geo_hires.export import write_gpkg

    scene = open_scene(fixtures / "sample_geotiff.tif")
    truth = read_labels(fixtures / "geotiff_labels.geojson")
    write_gpkg(tmp_path / "p.gpkg", truth.to_pixels(scene), scene)
    pred = read_labels(tmp_path / "p.gpkg")
    assert len(pred.rings) == len(truth.rings) and set(pred.names) == set(truth.names)
    assert evaluate(*common_frame(pred, truth, None)).overall.ap50_95 == pytest.approx(1.0)
    import geopandas as gpd
    import shapely

    parts = shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(5, 5, 6, 9)])
    frame = gpd.GeoDataFrame(
        {"class": ["car", "dot", "car"], "score": [None, 0.5, 0.75]},
        geometry=[shapely.box(10, 10, 12, 13), shapely.Point(1, 1), parts], crs="EPSG:32631",
    )  # fmt: skip
    frame.to_file(tmp_path / "m.fgb", driver="FlatGeobuf", engine="pyogrio")
    got = read_labels(tmp_path / "m.fgb")  # a point among polygons: skipped, not the end
    assert got.names == ("car", "car") and got.scores == (1.0, 0.75)  # null: 1, as in GeoJSON
    assert [r.min(0).tolist() + r.max(0).tolist() for r in got.rings] == [
        [10, 10, 12, 13], [0, 0, 6, 9]]  # the MultiPolygon's parts together  # fmt: skip
    assert pyproj.CRS(got.crs).to_epsg() == 32631
