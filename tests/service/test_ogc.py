"""OGC API – Processes and Features on 127.0.0.1, driven by their own clients: OWSLib runs a
job and reads its results; GDAL's OAPIF driver (and QGIS, in test_qgis_oapif) opens the job's
detections by URL; STAC items of results and models validate against the vendored schemas."""

from __future__ import annotations

import os
import subprocess
import sys

import geopandas as gpd
import pytest
import requests
from geo_hires_service.routes.features import MAX_ITEMS
from owslib.ogcapi import API
from owslib.ogcapi.processes import Processes

from geo_hires.detect.options import DEFAULT_MODEL, option_fields
from geo_hires.export.stac_schemas import validate_item
from tests.qgis import run_qgis
from tests.service.conftest import wait_job_status
from tests.service.harness import ALICE, BOB, TOKENS
from tests.waiting import wait_for

PROC = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"


def test_owslib_discovers_the_detect_process(service):
    url, _ = service
    client = Processes(url, headers=dict(ALICE))
    claimed = set(client.conformance()["conformsTo"])
    assert {PROC + c for c in ("core", "ogc-process-description", "json", "job-list",
                               "dismiss")} <= claimed  # fmt: skip
    openapi = requests.get(f"{url}/openapi.json", timeout=10).json()["openapi"]
    assert openapi.startswith("3.1") and not [c for c in claimed if c.endswith("/oas30")]
    assert [p["id"] for p in client.processes()] == ["detect"]
    inputs = client.process("detect")["inputs"]
    assert set(inputs) == {"scene", *(f.name for f in option_fields(service=True))}
    assert inputs["block"]["schema"]["maximum"] == 4096  # the limits /v1 enforces
    assert "aircraft_lsn" in inputs["model"]["schema"]["enum"]


def test_owslib_runs_a_job_and_reads_its_results(service, job):
    url, _ = service
    job_id, status = job
    assert status["status"] == "successful", status
    assert (
        status["progress"] == 100 and status["created"] <= status["started"] <= status["finished"]
    )
    rels = {ln["rel"]: ln["href"] for ln in status["links"]}
    results = API(rels["http://www.opengis.net/def/rel/ogc/1.0/results"],
                  headers=dict(ALICE)).response  # fmt: skip
    geojson = requests.get(results["detections"]["href"], headers=ALICE, timeout=30).json()
    assert len(geojson["features"]) == sum(results["counts"]["by_class"].values()) > 5
    by_polygon = {p["name"]: p["counts"]["Airplane"] for p in status["counts"]["by_polygon"]}
    assert set(by_polygon) == {"west", "east"}
    assert sum(by_polygon.values()) == len(geojson["features"])  # halves: each counted once
    v1 = requests.get(f"{url}/v1/jobs/{job_id}", headers=ALICE, timeout=10).json()
    assert v1["counts"] == status["counts"]
    listed = API(f"{url}/jobs", headers=dict(ALICE)).response["jobs"]
    assert job_id in [j["jobID"] for j in listed]


def test_job_list_and_results_are_the_tenants_own(service, job):
    url, _ = service
    job_id, _ = job
    assert requests.get(f"{url}/jobs/{job_id}", headers=BOB, timeout=10).status_code == 404
    bob_jobs = requests.get(f"{url}/jobs", headers=BOB, timeout=10).json()["jobs"]
    assert job_id not in [j["jobID"] for j in bob_jobs]
    assert requests.get(f"{url}/jobs", timeout=10).status_code == 401
    missing = requests.get(f"{url}/jobs/{'0' * 32}/results", headers=ALICE, timeout=10)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/no-such-job")


def test_dismiss_cancels_and_removes_results(service, scenes):
    url, _ = service
    headers = {**ALICE, "Prefer": "respond-async"}
    body = {"inputs": {"scene": str(scenes[1]), "block": 512}}
    r = requests.post(f"{url}/processes/detect/execution", headers=headers, json=body, timeout=30)
    assert r.status_code == 201 and r.headers["Preference-Applied"] == "respond-async"
    job_id = r.json()["jobID"]
    d = requests.delete(f"{url}/jobs/{job_id}", headers=ALICE, timeout=10)
    assert d.status_code == 200 and d.json()["status"] == "dismissed"
    final = wait_job_status(url, job_id)
    assert final["status"] == "dismissed"
    gone = requests.get(f"{url}/jobs/{job_id}/results", headers=ALICE, timeout=10)
    assert gone.status_code == 410


def test_execute_refuses_bad_inputs(service, scenes):
    url, _ = service
    post = lambda inputs: requests.post(  # noqa: E731
        f"{url}/processes/detect/execution", json={"inputs": inputs}, headers=ALICE, timeout=30
    )
    assert post({"score_threshold": 0.3}).status_code == 400  # no scene
    assert post({"scene": str(scenes[1]), "block": 5}).status_code == 400  # below the limit
    assert post({"scene": "/etc/passwd"}).status_code in (400, 403)
    nope = requests.post(f"{url}/processes/nope/execution", json={"inputs": {}}, headers=ALICE)
    assert nope.status_code == 404 and nope.json()["type"].endswith("/no-such-process")


def _gdal_read(url: str, token: str | None, out) -> subprocess.CompletedProcess[str]:
    """``pyogrio.read_dataframe("OAPIF:URL")`` in a client process of its own (GDAL holds the
    GIL while it reads, and this process serves the answers), the token in GDAL's own config
    options as environment variables: ``GDAL_HTTP_AUTH=BEARER``, ``GDAL_HTTP_BEARER`` (the
    OAPIF driver sets its own Accept header, which replaces ``GDAL_HTTP_HEADERS``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDAL_HTTP")}
    if token is not None:
        env |= {"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token}
    code = (
        "import sys, pyogrio; "
        "pyogrio.read_dataframe('OAPIF:' + sys.argv[1]).to_parquet(sys.argv[2])"
    )
    return subprocess.run([sys.executable, "-c", code, url, str(out)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _job_geojson(data, job_id) -> gpd.GeoDataFrame:
    return gpd.read_file(next((data / "jobs" / job_id / "out").glob("apron.geojson")))


def test_gdal_opens_the_detections_by_url(service, job, tmp_path):
    url, data = service
    job_id, _ = job
    for name in (job_id, f"{job_id}-coverage"):
        done = _gdal_read(f"{url}/collections/{name}", TOKENS[0], tmp_path / f"{name}.parquet")
        assert done.returncode == 0, done.stderr
    got = gpd.read_parquet(tmp_path / f"{job_id}.parquet")
    cover = gpd.read_parquet(tmp_path / f"{job_id}-coverage.parquet")
    want = _job_geojson(data, job_id)
    assert len(got) == len(want) > 5
    assert list(got["class"]) == list(want["class"])
    assert list(got["score"]) == pytest.approx(list(want["score"]))
    assert all(a.equals_exact(b, 1e-9) for a, b in zip(got.geometry, want.geometry, strict=True))
    assert sorted(cover["level"]) == ["coarse", "full", "refine"]


def test_gdal_without_the_tenants_token_gets_nothing(service, job, tmp_path):
    url, _ = service
    job_id, _ = job
    for token, status in ((TOKENS[1], "404"), (None, "401")):
        done = _gdal_read(f"{url}/collections/{job_id}", token, tmp_path / "x.parquet")
        assert done.returncode != 0 and f"HTTP error code : {status}" in done.stderr


def test_items_page_with_next_links_and_filter_by_bbox(service, job):
    url, data = service
    job_id, _ = job
    want = _job_geojson(data, job_id)
    seen, page = [], f"{url}/collections/{job_id}/items?limit=4"
    while page:
        body = requests.get(page, headers=ALICE, timeout=10).json()
        assert body["numberMatched"] == len(want) and body["numberReturned"] <= 4
        seen += [f["id"] for f in body["features"]]
        page = next((ln["href"] for ln in body["links"] if ln["rel"] == "next"), None)
    assert seen == list(range(1, len(want) + 1))
    x0, y0, x1, y1 = want.total_bounds
    west = f"{x0 - 1e-6},{y0 - 1e-6},{(x0 + x1) / 2},{y1 + 1e-6}"
    body = requests.get(f"{url}/collections/{job_id}/items", params={"bbox": west, "limit": 1000},
                        headers=ALICE, timeout=10).json()  # fmt: skip
    expect = want.cx[x0 - 1e-6 : (x0 + x1) / 2, y0 - 1e-6 : y1 + 1e-6]
    assert body["numberMatched"] == len(expect) < len(want)
    got = requests.get(f"{url}/collections/{job_id}/items/2", headers=ALICE, timeout=10)
    assert got.headers["Cache-Control"] == "no-store"  # a tenant's answer is never replayed
    one = got.json()
    assert one["id"] == 2 and one["properties"]["score"] == want["score"][1]
    big = requests.get(f"{url}/collections/{job_id}/items", params={"limit": 20_000},
                       headers=ALICE).json()  # a server may cap limit, not refuse it  # fmt: skip
    assert big["numberReturned"] == len(want)
    assert f"limit={MAX_ITEMS}&" in next(ln["href"] for ln in big["links"] if ln["rel"] == "self")
    for bad in ("limit=0", "limit=x", "offset=-1"):  # OGC: an invalid parameter is a 400
        got = requests.get(f"{url}/collections/{job_id}/items?{bad}", headers=ALICE)
        assert got.status_code == 400, (bad, got.text)
    assert requests.get(f"{url}/jobs?limit=0", headers=ALICE).status_code == 400
    many = requests.get(f"{url}/jobs", params={"limit": 5000}, headers=ALICE)
    assert many.status_code == 200 and "limit=1000&" in many.json()["links"][0]["href"]
    paged = requests.get(f"{url}/collections/{job_id}/items", headers=ALICE,
                         params={"bbox": west, "limit": 1}).json()  # fmt: skip
    nxt = next(ln["href"] for ln in paged["links"] if ln["rel"] == "next")
    assert requests.get(nxt, headers=ALICE).json()["numberMatched"] == len(expect)
    for missing in ("0", str(len(want) + 1), "x", "%C2%B2", "02"):  # "²": a digit to Python
        gone = requests.get(f"{url}/collections/{job_id}/items/{missing}", headers=ALICE)
        assert gone.status_code == 404, (missing, gone.text)
    assert requests.get(f"{url}/collections/{job_id}", headers=BOB, timeout=10).status_code == 404
    items = f"{url}/collections/{job_id}/items"
    for bad, why in (
        ("bbox=1,2", "bbox"),
        ("bbox=10,20,5,5", "minlat <= maxlat"),
        ("bbox=0,-95,1,1", "latitudes -90..90"),
        ("bbox=0,0,181,1", "longitudes"),
        ("crs=EPSG:3857", "unknown query parameter 'crs'"),
        ("bbox-crs=EPSG:3857&bbox=0,0,1,1", "'bbox-crs'"),
        ("foo=1", "'foo'"),
        ("f=html", "JSON only (f=json)"),
        ("datetime=garbage", "RFC 3339"),
        ("datetime=20240501", "RFC 3339"),  # ISO 8601's basic form: Python's parser takes it
        ("datetime=2024-W18", "RFC 3339"),
        ("datetime=2024-02-01/2024-01-01", "ends before it starts"),
        ("datetime=..", "cannot be open"),
        ("datetime=a/b/c", "START/END"),
    ):
        got = requests.get(f"{items}?{bad}", headers=ALICE, timeout=10)
        assert got.status_code == 400 and why in got.json()["detail"], (bad, got.text)
    everything = len(want)
    for good in ("f=json", "datetime=2024-05-01T10:00:00Z", "datetime=2024-05-01/..",
                 "datetime=../2030-01-01T00:00:00%2B02:00", "bbox=170,-90,-170,90&limit=1",
                 "bbox=-180,-90,0,180,90,10"):  # fmt: skip
        got = requests.get(f"{items}?{good}", headers=ALICE, timeout=10)
        assert got.status_code == 200, (good, got.text)
        assert got.json()["numberMatched"] == (0 if good.startswith("bbox=170") else everything)
    paged = requests.get(f"{items}?datetime=2024-05-01/..&limit=1", headers=ALICE).json()
    nxt = next(ln["href"] for ln in paged["links"] if ln["rel"] == "next")
    assert "&datetime=2024-05-01/.." in nxt  # the next page keeps the filter
    assert requests.get(f"{items}/1?foo=1", headers=ALICE, timeout=10).status_code == 400
    from geo_hires_service import feature_index

    feature_index.indexed.cache_clear()
    listed = requests.get(f"{url}/collections", headers=ALICE, timeout=10).json()["collections"]
    assert {job_id, f"{job_id}-coverage"} <= {c["id"] for c in listed}
    assert feature_index.indexed.cache_info().misses == 0  # extents from STAC items: no layer read
    stac = requests.get(f"{url}/v1/jobs/{job_id}/stac", headers=ALICE, timeout=10).json()
    mine = next(c for c in listed if c["id"] == job_id)
    assert mine["extent"]["spatial"]["bbox"] == [stac["bbox"]]


def test_stac_items_of_the_job_and_the_models_validate(service, job):
    url, _ = service
    job_id, _ = job
    item = requests.get(f"{url}/v1/jobs/{job_id}/stac", headers=ALICE, timeout=10).json()
    assert len(validate_item(item)) == 3  # core, label, processing
    links = {ln["rel"]: ln["href"] for ln in item["links"]}
    assert "source" not in links  # a file on the server: no client could fetch it
    assert item["properties"]["title"].endswith("detections in apron.tif")
    model = requests.get(links["derived_from"], headers=ALICE, timeout=10).json()
    assert model["properties"]["mlm:name"] == DEFAULT_MODEL and validate_item(model)
    assert requests.get(item["assets"]["labels"]["href"], headers=ALICE, timeout=30).ok
    names = [m["name"] for m in requests.get(f"{url}/v1/models", headers=ALICE).json()["models"]]
    for m in requests.get(f"{url}/v1/models", headers=ALICE, timeout=30).json()["models"]:
        validate_item(m["mlm"])
    assert "aircraft_yolo" in names


@pytest.mark.qgis
def test_qgis_loads_the_detections_by_url(service, job, tmp_path):
    """QGIS's OAPIF provider, the token as a Basic password (QGIS's authentication manager
    sends Basic; 3.22 has no custom-header method), as the README tells an analyst."""
    url, data = service
    job_id, _ = job
    seen = run_qgis("oapif_layer.py", url, job_id, TOKENS[0], str(tmp_path))
    want = _job_geojson(data, job_id)
    assert seen["valid"], seen
    assert seen["count"] == seen["fetched"] == len(want)
    assert {"class", "score", "level", "model"} <= set(seen["fields"])
    assert seen["classes"] == list(want["class"])
    assert seen["scores"] == pytest.approx(list(want["score"]))
    refused = run_qgis("oapif_layer.py", url, job_id, TOKENS[1], str(tmp_path / "bob"))
    assert not refused["valid"]


def test_a_scene_without_crs_gives_a_job_without_collections(service, scenes):
    """Its detections are in pixels: offered as CRS84 features, a GIS would put them anywhere."""
    import rasterio

    url, _ = service
    root, scene = scenes
    bare = root / "no_crs.tif"
    with rasterio.open(scene) as src:
        profile = {**src.profile, "crs": None, "transform": rasterio.Affine.identity()}
        with rasterio.open(bare, "w", **profile) as dst:
            dst.write(src.read())
    r = requests.post(f"{url}/v1/jobs", json={"uri": str(bare)}, headers=ALICE)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    done = wait_for(lambda: requests.get(f"{url}/v1/jobs/{job_id}", headers=ALICE).json(),
                    lambda j: j["state"] not in ("queued", "running"), timeout=300, every=0.2,
                    what=f"job {job_id}")  # fmt: skip
    assert done["state"] == "succeeded", done
    for path in (f"collections/{job_id}", f"collections/{job_id}/items",
                 f"collections/{job_id}-coverage"):  # fmt: skip
        got = requests.get(f"{url}/{path}", headers=ALICE)
        assert got.status_code == 404 and "has no CRS" in got.json()["detail"], got.text
    from geo_hires_service import feature_index

    feature_index.indexed.cache_clear()
    listed = requests.get(f"{url}/collections", headers=ALICE).json()["collections"]
    assert not {c["id"] for c in listed} & {job_id, f"{job_id}-coverage"}
    assert feature_index.indexed.cache_info().misses == 0  # its STAC item said: no index built
    assert requests.get(f"{url}/v1/jobs/{job_id}/result", headers=ALICE).status_code == 200
    status = requests.get(f"{url}/jobs/{job_id}", headers=ALICE).json()
    results = requests.get(f"{url}/jobs/{job_id}/results", headers=ALICE).json()
    item = requests.get(f"{url}/v1/jobs/{job_id}/stac", headers=ALICE).json()
    hrefs = [ln["href"] for ln in status["links"]]
    hrefs += [ln["href"] for ln in results.values() if isinstance(ln, dict) and "href" in ln]
    hrefs += [a["href"] for a in item["assets"].values()]
    assert "/collections/" not in " ".join(hrefs), hrefs  # none links to the 404s above
    for href in hrefs:
        assert requests.get(href, headers=ALICE).status_code == 200, href
