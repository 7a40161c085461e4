"""Two runner replicas on different nodes of a real multi-node Ray cluster share one PostgreSQL
store: the node of the runner that is mid-job is killed, the other runner takes the job over
when the lease expires and finishes it from the journal with the CLI's bytes, and no unit is
computed twice (each unit's journal line is written once, by one runner).

``ray.cluster_utils.Cluster`` starts a head without CPUs (like a KubeRay head with
``num-cpus: 0``) and two worker nodes, each with its own raylet, object store and workers.
``geo-hires serve --address`` joins it as a separate process; runners reserve half a CPU, so
Serve places them on the workers, one per node (``--runner-replicas-per-node 1``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.raycluster import local_cluster
from tests.service.harness import ALICE, serve_process
from tests.service.postgres import missing_reason, postgres_server
from tests.service.test_observe import json_lines
from tests.waiting import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

LEASE_S = 8


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def cluster() -> Iterator[Any]:
    with local_cluster(workers=2, cpus_per_worker=2) as c:
        yield c


def _get(url: str, path: str, timeout: float = 60) -> requests.Response:
    """GET through the head's proxy; while Serve moves the ingress off a lost node it may
    answer 503 or not at all for a moment."""

    def get() -> requests.Response | None:
        try:
            return requests.get(f"{url}{path}", headers=ALICE, timeout=30)
        except requests.RequestException:
            return None

    r = wait_for(get, lambda r: r is not None and r.status_code < 500,
                 timeout=timeout, every=0.5, what=f"GET {path}")  # fmt: skip
    assert r is not None
    return r


def _job(url: str, job_id: str, until, timeout: float = 600) -> dict:
    return wait_for(lambda: _get(url, f"/v1/jobs/{job_id}").json(), until,
                    timeout=timeout, every=0.3, what=f"job {job_id}")  # fmt: skip


def _runners_up(logs: Path, n: int, timeout: float = 240) -> list[str]:
    def owners() -> list[str]:
        started = [x for x in json_lines(logs) if x.get("message") == "runner started"]
        return [o for x in started for o in x["runners"]]

    return wait_for(owners, lambda o: len(o) >= n, timeout=timeout, every=1,
                    what=f"{n} runners started")  # fmt: skip


def _owner(pg_url: str, job_id: str) -> str | None:
    from geo_hires_service.store import JobStore

    store = JobStore(pg_url)
    try:
        job = store.get(job_id)
        return job.lease_owner if job else None
    finally:
        store.close()


def _at(line: dict) -> float:
    return int(line["timestamp_ns"]) / 1e9


def test_a_lost_runner_node_hands_its_job_to_the_other_runner(tmp_path, pg_url, cluster):
    root = tmp_path / "scenes"
    root.mkdir()
    scene = root / "big.tif"
    write_synthetic(scene, SynthSpec(width=3000, height=2600, seed=7, density=Density.DENSE))
    expected = tmp_path / "cli.geojson"
    cli = ["--block", "128", "--score-threshold", "0.05"]
    assert main(["detect", str(scene), "-o", str(expected), *cli]) == 0

    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    from geo_hires.detect.ray_local import offline_env

    with offline_env():
        env = dict(os.environ)
    args = [
        "--address", cluster.address, "--db", pg_url, "--runner-replicas", "2",
        "--runner-replicas-per-node", "1", "--runner-cpus", "0.5",
        "--lease-seconds", str(LEASE_S), "--log-dir", str(logs), "--log-level", "DEBUG",
    ]  # fmt: skip
    with serve_process(data, (root,), *args, env=env, local=False) as (_proc, url):
        owners = _runners_up(logs, 2)
        workers = {n.node_id: n for n in cluster.worker_nodes}
        nodes = {o.split("@")[1].split("/")[0] for o in owners}
        assert nodes == set(workers), (owners, list(workers))  # one runner on each worker
        body = {"uri": str(scene), "options": {"block": 128, "score_threshold": 0.05}}
        job = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE, timeout=60).json()
        _job(url, job["id"], lambda j: j["progress"]["units_done"] >= 4)
        first = _owner(pg_url, job["id"])
        victim = workers[first.split("@")[1].split("/")[0]]
        cluster.remove_node(victim, allow_graceful=False)  # raylet, runner, actors: gone
        killed_at = time.time()
        done = _job(url, job["id"], lambda j: j["state"] in ("succeeded", "failed", "cancelled"))
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        got = _get(url, f"/v1/jobs/{job['id']}/result").content
    assert got == expected.read_bytes()

    lines = sorted((x for x in json_lines(logs) if x.get("job") == job["id"]), key=_at)
    starts = [x for x in lines if x["message"] == "job started"]
    assert len(starts) == 2 and starts[0]["runner"] == first
    second = starts[1]["runner"]
    assert second != first and second in owners
    units = [x for x in lines if x["message"] == "unit done"]
    keys = [x["unit"] for x in units]
    by_first = [x for x in units if x["runner"] == first]
    by_second = [x for x in units if x["runner"] == second]
    assert len(by_first) >= 4 and by_second and len(by_first) + len(by_second) == len(units)
    # each unit once: the second runner computed exactly what the journal did not hold. The
    # first may have journalled one unit more than it logged (killed between the two writes).
    resumed = sum(x["units"] for x in lines if x["message"] == "units resumed"
                  and x["runner"] == second)  # fmt: skip
    assert len(keys) == len(set(keys)) and len(by_first) <= resumed <= len(by_first) + 1
    assert resumed + len(by_second) == done["progress"]["units_total"]
    # never at the same time: the second runner started after the first one's last unit, and
    # no sooner than the lease let it
    assert _at(starts[1]) >= max(_at(x) for x in by_first)
    assert _at(starts[1]) >= killed_at - 1
    assert min(_at(x) for x in by_second) > _at(starts[1]) - 1
    print(
        f"\nrunner node lost after {len(by_first)} of {len(keys)} units; the other runner took "
        f"over {_at(starts[1]) - killed_at:.1f} s later (lease {LEASE_S} s)"
    )
