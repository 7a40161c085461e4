"""The index of a result's GeoJSON: each feature's span of text and bounds, so that an OGC
features page parses only its own features."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import shapely
from geo_hires_service.feature_index import index_text, indexed, read_features, result_index

from geo_hires.georef import lonlat_bounds


def _square(x: float, name: str) -> dict:
    ring = [[x, 0.0], [x + 1, 0.0], [x + 1, 1.0], [x, 1.0], [x, 0.0]]
    return {"type": "Feature", "properties": {"class": name, "features": [1, 2]},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip


FEATURES = [_square(0, "avión"), {"type": "Feature", "properties": {}, "geometry": None},
            _square(179.5, "ship ]}")]  # fmt: skip


@pytest.mark.parametrize("indent", [None, 2])
def test_spans_hold_each_feature_whatever_the_layout(indent):
    doc = {"type": "FeatureCollection", "features": FEATURES, "geo_hires": {"features": []}}
    text = json.dumps(doc, indent=indent, ensure_ascii=False)  # features not last, non-ASCII
    index = index_text(text)
    assert [json.loads(text[s:e]) for s, e in index.spans] == FEATURES
    assert index.bounds[0].tolist() == list(lonlat_bounds(shapely.box(0, 0, 1, 1)))
    assert np.isnan(index.bounds[1]).all() and index.bounds[2][0] == 179.5
    assert index.length == len(text)


def test_no_features_and_not_a_collection():
    assert index_text('{"type": "FeatureCollection", "features": []}').spans.shape == (0, 2)
    for broken in ('{"features": [{"a": 1}', "[1, 2]", '{"features" [1]}', ""):
        with pytest.raises(ValueError):
            index_text(broken)


def test_a_replaced_file_is_read_with_an_index_of_its_own(tmp_path):
    path = tmp_path / "r.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    first = read_features(str(path), stamp, np.array([2]))
    assert first == [{**FEATURES[2], "id": 3}]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES[::-1]}, indent=1))
    assert read_features(str(path), stamp, np.array([0])) == [{**FEATURES[2], "id": 1}]
    assert indexed.cache_info().currsize >= 1


def test_properties_geos_refuses_do_not_break_the_index():
    """GEOS reads a whole feature: a NaN or a lone surrogate in its properties (valid to
    Python's JSON) failed the index, and with it every page of the result."""
    text = (
        '{"type": "FeatureCollection", "features": ['
        + json.dumps(_square(10, "x")).replace('"features": [1, 2]', '"score": NaN')
        + ", "
        + json.dumps(_square(20, "\ud800"))
        + "]}"
    )
    index = index_text(text)
    assert index.bounds[:, 0].tolist() == [10.0, 20.0]


def test_a_box_of_no_height_across_the_antimeridian_meets_what_it_crosses(tmp_path):
    """The union of its two parts, each of no area, was empty: it matched nothing."""
    from geo_hires_service.routes.features import _matching, box_matches

    path = tmp_path / "r.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [_square(175, "x")]}))
    assert _matching(path, (170, 0.5, 179, 0.5)).tolist() == [0]
    assert _matching(path, (170, 0.5, -170, 0.5)).tolist() == [0]
    assert _matching(path, (177, 0.5, -170, 0.5)).tolist() == []
    bounds = np.array([[175.0, 0.0, 176.0, 1.0], [-179.0, 0.0, -178.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    meet, inside = box_matches(bounds, (170, -1, -170, 2))  # across: both parts hold one
    assert meet.tolist() == [True, True, False] and inside.tolist() == [True, True, False]


@pytest.mark.parametrize("where", ["first", "last"])
def test_the_index_says_whether_the_features_are_pixels(where):
    """The OGC routes refuse a pixel-space result; they parsed it whole to find out (once per
    version, beside the index): the index's own scan reads the top-level ``geo_hires``."""
    for pixels in (True, False, None):
        header = {} if pixels is None else {"pixel_space": pixels}
        doc = {"type": "FeatureCollection", "features": FEATURES}
        doc = {"geo_hires": header, **doc} if where == "first" else {**doc, "geo_hires": header}
        assert index_text(json.dumps(doc)).pixel_space is bool(pixels)
    nested = {"type": "FeatureCollection", "features": [{**FEATURES[0], "geo_hires": {
        "pixel_space": True}}]}  # fmt: skip
    assert index_text(json.dumps(nested)).pixel_space is False


def test_requests_at_once_build_one_index(tmp_path, monkeypatch):
    """A client opening a large layer asks for pages together: each request built the index."""
    import threading
    import time

    from geo_hires_service import feature_index

    path = tmp_path / "r.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    st = os.stat(path)
    built: list[int] = []

    def slow_index(text: str) -> feature_index.FeatureIndex:
        built.append(len(text))
        time.sleep(0.3)
        return index_text(text)

    monkeypatch.setattr(feature_index, "index_text", slow_index)
    indexed.cache_clear()
    got: list[feature_index.FeatureIndex] = []
    stamp = (st.st_mtime_ns, st.st_size)
    threads = [threading.Thread(target=lambda: got.append(result_index(str(path), stamp)))
               for _ in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert not feature_index._BUILDING  # nothing kept per file once built
