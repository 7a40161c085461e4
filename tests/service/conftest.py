"""The OGC tests' fixtures: a crop of the demo scene under an allowed root, ``geo-hires
serve``'s app on 127.0.0.1, and one detect job run through OWSLib with a two-polygon AOI (each
module that asks for them gets its own; a module's own ``service`` fixture wins)."""

from __future__ import annotations

import json

import pytest
from owslib.ogcapi import API
from owslib.ogcapi.processes import Processes

from tests.halves import scene_halves
from tests.service.harness import ALICE, running_service
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, demo_crop):
    root = tmp_path_factory.mktemp("ogc-scenes")
    scene = root / "apron.tif"
    scene.write_bytes(demo_crop(0, 0, 1536, 1024).read_bytes())
    return root, scene


@pytest.fixture(scope="module")
def service(tmp_path_factory, scenes):
    data = tmp_path_factory.mktemp("ogc-data")
    with running_service(data, (scenes[0],)) as url:
        yield url, data


def _aoi(scene) -> dict:
    return json.loads(scene_halves(scene).to_crs(4326).to_json())


def wait_job_status(url: str, job_id: str, headers=ALICE, timeout=300) -> dict:
    return wait_for(lambda: API(f"{url}/jobs/{job_id}", headers=dict(headers)).response,
                    lambda status: status["status"] not in ("accepted", "running"),
                    timeout=timeout, every=0.2, what=f"job {job_id}")  # fmt: skip


@pytest.fixture(scope="module")
def job(service, scenes):
    """A detect job run through OWSLib, with a two-polygon AOI."""
    url, _ = service
    client = Processes(url, headers=dict(ALICE))
    inputs = {"scene": {"href": str(scenes[1])}, "score_threshold": 0.3, "aoi": _aoi(scenes[1])}
    accepted = client.execute("detect", inputs, async_=True)
    location = client.response_headers["Location"]
    assert accepted["status"] == "accepted" and location.endswith(f"/jobs/{accepted['jobID']}")
    return accepted["jobID"], wait_job_status(url, accepted["jobID"])
