"""OGC API – Features beyond what its clients exercise: pages that parse only their features,
bbox by geometry, unknown parameters and HEAD on every resource, and an API definition that
says what is answered."""

from __future__ import annotations

import json

import requests
import shapely

from tests.service.harness import ALICE


def test_a_page_parses_only_its_own_features(service, job, monkeypatch):
    """A result was parsed whole (with a shapely geometry per feature) for every page once it
    was over 8 MiB: a QGIS layer of a gigapixel scene's detections took seconds a page."""
    import json

    from geo_hires_service import feature_index

    url, data = service
    job_id, _ = job
    doc = json.loads(next((data / "jobs" / job_id / "out").glob("apron.geojson")).read_text())
    want = [{"type": "Feature", "id": i + 1, "geometry": f["geometry"],
             "properties": f["properties"]} for i, f in enumerate(doc["features"])]  # fmt: skip
    parsed: list[int] = []

    class CountingJson:
        @staticmethod
        def loads(text: str) -> object:
            parsed.append(len(text))
            return json.loads(text)

    feature_index.indexed.cache_clear()
    monkeypatch.setattr(feature_index, "json", CountingJson)
    items = f"{url}/collections/{job_id}/items"
    for offset in (1, 2):
        page = requests.get(f"{items}?limit=1&offset={offset}", headers=ALICE, timeout=10).json()
        assert page["features"] == [want[offset]]
    one = requests.get(f"{items}/3", headers=ALICE, timeout=10).json()
    assert {k: v for k, v in one.items() if k != "links"} == want[2]
    assert feature_index.indexed.cache_info().misses == 1  # indexed once per file version
    assert len(parsed) == 3 and max(parsed) < 1000  # one feature's text each


def test_bbox_selects_features_by_their_shape_not_their_box(service, job):
    """A bbox in a gap of the coverage's multipolygon (or off a detection's turned rectangle,
    inside its lon/lat box) returned that feature: OGC selects on the geometry."""
    url, data = service
    job_id, _ = job
    tried = 0
    for layer in ("apron.coverage.geojson", "apron.geojson"):
        path = next((data / "jobs" / job_id / "out").glob(layer))
        cid = job_id + ("-coverage" if "coverage" in layer else "")
        feats = json.loads(path.read_text())["features"]
        for number, f in enumerate(feats[:5], start=1):
            shape = shapely.geometry.shape(f["geometry"])
            gap = shapely.envelope(shape).difference(shape.buffer(1e-7))
            if gap.is_empty:
                continue
            x, y = gap.representative_point().coords[0]
            bbox = f"{x - 1e-9},{y - 1e-9},{x + 1e-9},{y + 1e-9}"
            got = requests.get(f"{url}/collections/{cid}/items", params={"bbox": bbox},
                               headers=ALICE, timeout=10).json()  # fmt: skip
            assert number not in [g["id"] for g in got["features"]], (layer, number)
            x, y = shape.representative_point().coords[0]  # on the shape: found
            bbox = f"{x - 1e-9},{y - 1e-9},{x + 1e-9},{y + 1e-9}"
            got = requests.get(f"{url}/collections/{cid}/items", params={"bbox": bbox},
                               headers=ALICE, timeout=10).json()  # fmt: skip
            assert number in [g["id"] for g in got["features"]], (layer, number)
            tried += 1
    assert tried >= 2


def test_every_ogc_resource_refuses_unknown_parameters_and_answers_head(service, job):
    """Only ``/items`` refused unknown parameters (the landing page took ``f=xml``), and
    ``HEAD`` was 405 everywhere (RFC 9110: a general-purpose server supports it)."""
    url, _ = service
    job_id, _ = job
    for path in ("", "conformance", "collections", f"collections/{job_id}"):
        for bad, why in (("foo=1", "unknown query parameter 'foo'"), ("f=xml", "JSON only")):
            got = requests.get(f"{url}/{path}?{bad}", headers=ALICE, timeout=10)
            assert got.status_code == 400 and why in got.json()["detail"], (path, got.text)
        assert requests.get(f"{url}/{path}?f=json", headers=ALICE, timeout=10).ok, path
    for path in ("", "conformance", f"collections/{job_id}/items", f"v1/jobs/{job_id}/result"):
        full = requests.get(f"{url}/{path}", headers=ALICE, timeout=10)
        head = requests.head(f"{url}/{path}", headers=ALICE, timeout=10)
        assert head.status_code == 200 and head.content == b"", (path, head.status_code)
        assert head.headers["content-type"] == full.headers["content-type"], path
    assert requests.head(f"{url}/collections/nope", headers=ALICE, timeout=10).status_code == 404


def test_the_api_definition_says_what_the_features_answer(service):
    """``/items`` was documented as 200 JSON or a 422 validation error; it answers GeoJSON, and
    400 or 404 problems."""
    url, _ = service
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    for path in ("/", "/conformance"):  # they answer 400 for an unknown parameter too
        assert "400" in doc["paths"][path]["get"]["responses"], path
    items = doc["paths"]["/collections/{collection_id}/items"]["get"]["responses"]
    assert set(items) == {"200", "400", "401", "404"}
    assert doc["paths"]["/collections/{collection_id}/items"]["get"]["security"] == [
        {"bearer": []}, {"basic": []}]  # fmt: skip
    assert "security" not in doc["paths"]["/conformance"]["get"]  # answered without a token
    assert list(items["200"]["content"]) == ["application/geo+json"]
    assert list(items["400"]["content"]) == ["application/problem+json"]
    errors = [r for ops in doc["paths"].values() for op in ops.values()
              for status, r in op["responses"].items() if status[0] == "4"]  # fmt: skip
    assert len(errors) >= 10 and all(list(r["content"]) == ["application/problem+json"]
                                    for r in errors if "content" in r)  # fmt: skip
    assert (
        "HTTPValidationError" not in json.dumps(doc) and "Problem" in doc["components"]["schemas"]
    )


def test_an_execute_refusal_is_one_the_definition_lists(service, scenes):
    """Schemathesis cannot make a file that is not a TIFF under an allowed root: the execute
    route answered 415 for one, which its definition left out."""
    url, _ = service
    root, _ = scenes
    (root / "notes.tif").write_text("not a raster")
    body = {"inputs": {"scene": str(root / "notes.tif")}}
    got = requests.post(f"{url}/processes/detect/execution", json=body, headers=ALICE, timeout=10)
    assert got.status_code == 415, got.text
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    listed = doc["paths"]["/processes/{process_id}/execution"]["post"]["responses"]
    assert {"400", "404", "408", "413", "415", "429"} <= set(listed)
