"""The real service: ``geo-hires serve`` (Ray Serve) on 127.0.0.1, 20 concurrent jobs, cancel,
and a SIGKILLed service that finishes its job after a restart, byte-identical to the CLI."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.service.harness import ALICE, serve_process, wait_job
from tests.waiting import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

OPTIONS = {"score_threshold": 0.05, "block": 256}
CLI_OPTIONS = ("--score-threshold", "0.05", "--block", "256")
SIZES = [(1400, 1100, Density.DENSE), (900, 700, Density.SPARSE), (1200, 800, Density.DENSE)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    for i, (w, h, density) in enumerate(SIZES):
        write_synthetic(
            root / f"scene{i}.tif", SynthSpec(width=w, height=h, seed=60 + i, density=density)
        )
    write_synthetic(
        root / "big.tif", SynthSpec(width=3000, height=2600, seed=7, density=Density.DENSE)
    )
    return root


def _cli(scene: Path, out_dir: Path, *options: str) -> bytes:
    out = out_dir / f"{scene.stem}.geojson"
    if not out.exists():
        assert main(["detect", str(scene), "-o", str(out), *options]) == 0
    return out.read_bytes()


@pytest.fixture(scope="module")
def expected(root, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("cli")
    return {f"scene{i}": _cli(root / f"scene{i}.tif", out, *CLI_OPTIONS) for i in range(3)}


@pytest.fixture(scope="module")
def live_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def live(live_data, root):
    logs = ("--log-dir", str(live_data / "logs"))
    with serve_process(live_data, (root,), "--runner-slots", "2", *logs) as (_proc, url):
        yield url


def _submit(url: str, root: Path, i: int, **headers: str) -> dict:
    name = f"scene{i % 3}.tif"
    if i % 2:  # uploads and URIs alternate; uploads past the 2 a tenant may send at once are
        # 429 with Retry-After, and sent again then, as `geo-hires submit` does
        from geo_hires_service.cli import _upload

        return _upload(requests, f"{url}/v1/jobs", root / name, OPTIONS,
                       {**ALICE, **headers}, timeout=120)  # fmt: skip
    else:
        body = {"uri": str(root / name), "options": OPTIONS}
        r = requests.post(f"{url}/v1/jobs", json=body, headers={**ALICE, **headers}, timeout=120)
    assert r.status_code == 202, r.text
    return r.json()


def test_twenty_concurrent_submissions_equal_the_cli(live, root, expected):
    with ThreadPoolExecutor(20) as pool:
        jobs = list(pool.map(lambda i: _submit(live, root, i), range(20)))
    assert len({j["id"] for j in jobs}) == 20
    again = _submit(live, root, 4, **{"Idempotency-Key": "k-4"})
    assert _submit(live, root, 4, **{"Idempotency-Key": "k-4"})["id"] == again["id"]
    for job in [*jobs, again]:
        done = wait_job(live, job["id"])
        assert done["state"] == "succeeded", done
        body = requests.get(f"{live}/v1/jobs/{job['id']}/result", headers=ALICE, timeout=60)
        assert body.content == expected[Path(job["scene"]).stem], job["scene"]
    assert any(b.count(b'"Feature"') for b in expected.values())  # real detections compared


def test_a_client_hanging_up_mid_upload_is_no_server_error_under_serve(live, live_data):
    """Ray Serve cancels the request, and the body's next read raised its TaskCancelledError:
    logged as "request failed" with a traceback (the replica's log), counted as a 500."""
    from tests.service.harness import TOKENS
    from tests.service.test_uploads import _held_upload

    held = _held_upload(live, TOKENS[0])
    time.sleep(1.0)  # the replica is reading the body (a socket closed at once never reaches it)
    held.close()
    logs = live_data / "logs"

    def said() -> str:
        return "".join(p.read_text(errors="replace") for p in logs.rglob("*.log"))

    wait_for(said, lambda text: "client disconnected" in text or "request failed" in text,
             timeout=30, every=0.2, what="the ingress's word on the hang-up")  # fmt: skip
    text = said()
    assert "client disconnected" in text and "request failed" not in text, text[-3000:]


def test_cancel_stops_a_running_job_within_seconds(live, root):
    job = requests.post(
        f"{live}/v1/jobs",
        json={"uri": str(root / "big.tif"), "options": {"block": 128}},
        headers=ALICE,
    ).json()
    running = wait_job(live, job["id"], until=lambda j: j["progress"]["units_done"] >= 1)
    assert running["state"] == "running"
    t0 = time.monotonic()
    assert requests.delete(f"{live}/v1/jobs/{job['id']}", headers=ALICE).status_code == 202
    done = wait_job(live, job["id"], timeout=60)
    assert done["state"] == "cancelled" and time.monotonic() - t0 < 20
    assert done["progress"]["units_done"] < done["progress"]["units_total"]
    res = requests.get(f"{live}/v1/jobs/{job['id']}/result", headers=ALICE)
    assert res.status_code == 410  # cancelled: it never will have one


def test_sigkilled_service_finishes_its_job_after_a_restart(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    body = {"uri": str(root / "big.tif"), "options": {"block": 128, "score_threshold": 0.05}}
    with serve_process(data, (root,)) as (proc, url):
        job = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE).json()
        mid = wait_job(url, job["id"], until=lambda j: j["progress"]["units_done"] >= 3)
        os.killpg(proc.pid, signal.SIGKILL)  # the service and its whole Ray, mid-job
        proc.wait()
    assert (
        mid["state"] == "running" and mid["progress"]["units_done"] < mid["progress"]["units_total"]
    )
    expected = _cli(root / "big.tif", tmp_path, "--block", "128", "--score-threshold", "0.05")
    with serve_process(data, (root,)) as (_proc, url):
        done = wait_job(url, job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2
        res = requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE, timeout=60)
        assert res.content == expected


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - found
        found |= frontier
    return found


def test_sigterm_stops_serve_and_its_ray_cleanly(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    with serve_process(data, (root,)) as (proc, url):
        assert requests.get(f"{url}/v1/healthz", timeout=10).ok
        family = _descendants(proc.pid)
        assert len(family) >= 3  # GCS, raylet, Serve's actors...
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/v1/healthz", timeout=5)
    said = (data / "serve.log").read_text()
    assert "geo_hires service stopped" in said
    # neither Serve's start nor its stop says something wrong happened: "New http_options ...
    # will not be applied" of options that were, a controller "killed by ray.kill"
    assert "will not be applied" not in said and "failed" not in said, said
    wait_for(lambda: [p for p in family if Path(f"/proc/{p}").exists()], lambda alive: not alive,
             timeout=30, every=0.5, what="the service's processes gone")  # fmt: skip


def test_sigterm_drains_the_runner_and_the_job_resumes_on_restart(tmp_path, root):
    """Serve's graceful shutdown: the runner stops claiming, its running job stops at the next
    unit and goes back to the queue; the next start resumes it from the journal."""
    from geo_hires_service.store import JobState, JobStore

    data = tmp_path / "data"
    data.mkdir()
    body = {"uri": str(root / "big.tif"), "options": {"block": 128, "score_threshold": 0.05}}
    with serve_process(data, (root,)) as (proc, url):
        job = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE).json()
        mid = wait_job(url, job["id"], until=lambda j: j["progress"]["units_done"] >= 3)
        queued = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE).json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(150) == 0
    store = JobStore(f"sqlite:///{data / 'jobs.db'}")
    drained = store.get(job["id"])
    assert drained.state is JobState.QUEUED and drained.attempts == 1, drained
    assert drained.lease_owner is None
    assert mid["progress"]["units_done"] <= drained.units_done < drained.units_total
    assert store.get(queued["id"]).state is JobState.QUEUED  # never claimed while draining
    assert store.get(queued["id"]).attempts == 0
    store.close()
    expected = _cli(root / "big.tif", tmp_path, "--block", "128", "--score-threshold", "0.05")
    with serve_process(data, (root,)) as (_proc, url):
        done = wait_job(url, job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2
        assert done["progress"]["units_done"] == done["progress"]["units_total"]
        res = requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE, timeout=60)
        assert res.content == expected
