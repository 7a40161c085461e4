"""What an operator sees of ``geo-hires serve``: the Prometheus metrics on the local node's
metrics port move while a job runs (next to Serve's own), and the JSON log lines carry the
job, the tenant and the request id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.service.harness import ALICE, free_port, serve_process, wait_job
from tests.service.test_intake import _corrupt_one_tile
from tests.waiting import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def scrape(port: int) -> dict[str, float]:
    """Our metrics (``ray_geo_hires_*``) and Serve's (``ray_serve_*``) summed over replicas,
    by name and labels of interest."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith(("ray_geo_hires", "ray_serve_")):
                continue
            keep = {k: v for k, v in s.labels.items() if k in ("state", "source", "type", "le")}
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(keep.items()))
            out[key] = out.get(key, 0.0) + s.value
    return out


def json_lines(folder: Path) -> list[dict]:
    """Every JSON log line Serve wrote into ``folder``."""
    lines = []
    for path in sorted(folder.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:  # a line being written
                    continue
    return lines


def _until_scraped(port: int, pred, timeout: float = 60) -> dict[str, float]:
    return wait_for(lambda: scrape(port), pred, timeout=timeout, every=0.5, what="the metrics")


def test_metrics_move_during_a_job_and_logs_carry_job_and_tenant(tmp_path):
    root = tmp_path / "scenes"
    root.mkdir()
    write_synthetic(root / "big.tif", SynthSpec(width=3000, height=2600, seed=7))
    write_synthetic(
        root / "small.tif", SynthSpec(width=600, height=500, seed=8, density=Density.DENSE)
    )
    _corrupt_one_tile(root / "small.tif", root / "bad.tif")
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    port = free_port()
    env = {**os.environ, "RAY_metrics_report_interval_ms": "1000"}  # Ray's default is 10 s
    extra = ("--metrics-port", str(port), "--log-dir", str(logs))
    with serve_process(data, (root,), *extra, env=env) as (_proc, url):
        rid = {**ALICE, "X-Request-ID": "trace-me-7"}
        body = {"uri": str(root / "big.tif"), "options": {"block": 128}}
        big = requests.post(f"{url}/v1/jobs", json=body, headers=rid)
        assert big.status_code == 202 and big.headers["x-request-id"] == "trace-me-7"
        upload = (root / "small.tif").read_bytes()
        small = requests.post(
            f"{url}/v1/jobs", files={"scene": ("small.tif", upload)}, headers=ALICE
        ).json()
        bad = requests.post(f"{url}/v1/jobs", json={"uri": str(root / "bad.tif")}, headers=ALICE)
        assert requests.get(f"{url}/v1/jobs/nope", headers=ALICE).status_code == 404
        wait_job(url, big.json()["id"], lambda j: j["progress"]["units_done"] >= 2)
        first = _until_scraped(port, lambda m: m.get("ray_geo_hires_units_total", 0) > 0)
        running = wait_job(url, big.json()["id"], lambda j: j["progress"]["units_done"] >= 6)
        assert running["state"] == "running"
        later = _until_scraped(
            port,
            lambda m: m.get("ray_geo_hires_units_total", 0) > first["ray_geo_hires_units_total"],
        )  # the counter moves while the job runs
        assert (
            later.get("ray_geo_hires_jobs,state=running", 0) >= 1
            or later.get("ray_geo_hires_units_per_second", 0) > 0
        )
        for job_id in (big.json()["id"], small["id"], bad.json()["id"]):
            wait_job(url, job_id, lambda j: j["state"] in ("succeeded", "failed"))
        done = _until_scraped(
            port,
            lambda m: (
                m.get("ray_geo_hires_jobs_finished_total,state=succeeded", 0) >= 2
                and m.get("ray_geo_hires_jobs_finished_total,state=failed", 0) >= 1
                and m.get("ray_geo_hires_jobs,state=succeeded", 0) >= 2
            ),
        )
    ours = sorted(k for k in done if "geo_hires" in k)
    assert "ray_geo_hires_megapixels_per_second" in done, ours
    assert done["ray_geo_hires_jobs_submitted_total,source=uri"] == 2
    assert done["ray_geo_hires_jobs_submitted_total,source=upload"] == 1
    assert done["ray_geo_hires_upload_bytes_total"] == len(upload)
    assert done["ray_geo_hires_errors_total,type=http_404"] >= 1
    assert done["ray_geo_hires_errors_total,type=SceneReadError"] == 1
    assert done["ray_geo_hires_job_duration_seconds_count,state=succeeded"] == 2
    assert done["ray_geo_hires_units_total"] >= running["progress"]["units_total"]
    assert done["ray_geo_hires_megapixels_total"] > 7.8  # 3000 x 2600 px, at least once
    assert done["ray_geo_hires_megapixels_per_second"] > 0
    assert "ray_geo_hires_queue_depth" in done
    assert any(k.startswith("ray_serve_num_http_requests") for k in done), sorted(done)[:20]

    lines = json_lines(logs)
    accepted = [x for x in lines if x.get("message") == "job accepted"]
    traced = [x for x in accepted if x.get("request_id") == "trace-me-7"]
    assert len(accepted) == 3 and len(traced) == 1
    assert traced[0]["job"] == big.json()["id"] and traced[0]["tenant"].startswith("t-")
    ran = [
        x for x in lines if x.get("job") == big.json()["id"] and x.get("message") != "job accepted"
    ]
    assert {x["message"] for x in ran} >= {"job started", "job succeeded"}
    assert all(x["tenant"] == traced[0]["tenant"] for x in ran)
    assert all(x.get("request_id") == "trace-me-7" for x in ran)  # the submit's id follows it
    failed = [x for x in lines if x.get("message") == "job failed"]
    assert len(failed) == 1 and "truncated or corrupt tile" in failed[0]["error"]
