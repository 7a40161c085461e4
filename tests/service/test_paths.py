"""Where the service's answers point: links under the prefix it is mounted at, a missing
output file, a map page asked for an id that is no job's (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from geo_hires_service.routes.features import bounds_extent, box_matches

from geo_hires.scene import SynthSpec, write_synthetic
from tests.service.harness import ALICE, problem_status, running_service, wait_job


def _proxy(url: str, path: str) -> str:
    """The URL a proxy serving the service under ``/geo`` forwards ``path`` to (the prefix
    stripped, as uvicorn's ``root_path`` expects)."""
    assert path.startswith("/geo/"), path
    return url + path.removeprefix("/geo")


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    """A service mounted under ``/geo`` (as behind a proxy) and one succeeded job."""
    roots = tmp_path_factory.mktemp("path-scenes")
    scene = roots / "site.tif"
    write_synthetic(scene, SynthSpec(width=640, height=520, seed=41))
    data = tmp_path_factory.mktemp("path-data")
    with running_service(data, (roots,), root_path="/geo") as url:
        r = requests.post(f"{url}/v1/jobs", json={"uri": str(scene)}, headers=ALICE)
        assert r.status_code == 202, r.text
        yield url, data, r


def test_every_link_carries_the_prefix_the_service_is_mounted_under(mounted):
    url, _, accepted = mounted
    job = accepted.json()
    assert accepted.headers["Location"] == f"/geo/v1/jobs/{job['id']}" == job["links"]["self"]
    done = wait_job(url, job["id"])
    assert done["state"] == "succeeded", done
    for name, path in done["links"].items():
        assert path.startswith("/geo/v1/jobs/"), (name, path)
        assert requests.get(_proxy(url, path), headers=ALICE, timeout=30).ok, (name, path)
    page = requests.get(_proxy(url, done["links"]["map"]), timeout=10).text
    assert 'href="/geo/v1/static/leaflet/leaflet.css"' in page and 'root = "/geo"' in page
    listed = requests.get(f"{url}/v1/jobs", headers=ALICE, timeout=10).json()["jobs"]
    assert listed[0]["links"]["result"] == f"/geo/v1/jobs/{job['id']}/result"
    ogc = requests.get(f"{url}/collections/{job['id']}", headers=ALICE, timeout=10).json()
    assert ogc["links"][0]["href"] == f"{url}/geo/collections/{job['id']}"


def test_a_result_file_gone_is_410_and_a_map_of_no_job_is_404(mounted, tmp_path):
    url, data, accepted = mounted
    job_id = accepted.json()["id"]
    assert wait_job(url, job_id)["state"] == "succeeded"
    for bad in ("nothex", "A" * 32, "0" * 31):  # only a job id's form goes into the page
        status, body = problem_status(requests.get(f"{url}/v1/jobs/{bad}/map", timeout=10))
        assert status == 404 and "no job" in body, (bad, body)
    (gpkg,) = (data / "jobs" / job_id).rglob("*.gpkg")
    gpkg.unlink()  # removed by hand, or by a sweep between the lookup and the download
    got = requests.get(f"{url}/v1/jobs/{job_id}/result", params={"format": "gpkg"},
                       headers=ALICE, timeout=10)  # fmt: skip
    status, body = problem_status(got)
    assert status == 410 and f"{gpkg.name} is no longer kept" in body, body
    assert requests.get(f"{url}/v1/jobs/{job_id}/result", headers=ALICE, timeout=10).ok


def test_an_extent_skips_features_without_a_geometry():
    nan = [np.nan] * 4
    assert bounds_extent(np.array([[1.0, 2.0, 3.0, 4.0], nan, [0.0, 3.0, 2.0, 5.0]])) == [
        0.0, 2.0, 3.0, 5.0]  # fmt: skip
    assert bounds_extent(np.array([nan])) == bounds_extent(np.empty((0, 4))) == [
        -180.0, -90.0, 180.0, 90.0]  # fmt: skip


def test_a_feature_split_at_the_antimeridian_meets_only_the_boxes_it_touches():
    """Its bounds run west > east (``lonlat_bounds``); before, they were -180..180 and every
    bbox in its latitudes met it."""
    bounds = np.array([[179.9, 0.0, -179.9, 1.0], [10.0, 0.0, 11.0, 1.0]])
    for bbox, want in (
        ((0, 0, 20, 1), [1]), ((179, 0, 180, 1), [0]), ((-180, 0, -179, 1), [0]),
        ((170, 0, -170, 1), [0]), ((-20, 0, 179.95, 1), [0, 1]), ((0, 5, 20, 6), []),
    ):  # fmt: skip
        assert np.flatnonzero(box_matches(bounds, bbox)[0]).tolist() == want, bbox
