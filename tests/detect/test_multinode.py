"""A real multi-node Ray cluster on this machine: a batch survives losing a node and uses a new one.

``ray.cluster_utils.Cluster`` starts a head (no CPUs: it only coordinates, like a KubeRay head
with ``num-cpus: 0``) and worker nodes, each with its own raylet, object store and worker
processes. ``geo-hires batch --executor ray --address …`` runs as a separate process, as the
RayJob entrypoint does. While it runs, one worker node is killed (raylet and workers, no
graceful shutdown) and a new one is added. The batch must finish, every output must equal the
local executor's bytes, no finished scene may be redone, and the new node must get work.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.raycluster import local_cluster

ray = pytest.importorskip("ray", reason="Ray is not installed")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCENES = 12
# one torch thread per actor and 1 CPU reserved per actor: what a worker pod's limits would say;
# the scanner alone, whose even units the node loss is timed against
DETECT = ["--model", "aircraft_lsn", "--block", "256", "--batch", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def scene_list(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multinode")
    for i in range(SCENES):
        spec = SynthSpec(width=2560, height=2048, seed=100 + i, density=Density.DENSE)
        write_synthetic(folder / f"s{i}.tif", spec)
    listing = folder / "scenes.txt"
    listing.write_text("".join(f"s{i}.tif\n" for i in range(SCENES)))
    return listing


@pytest.fixture(scope="module")
def reference(scene_list, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert main(["batch", str(scene_list), "--out-dir", str(out), *DETECT]) == 0
    return out


@pytest.fixture
def cluster() -> Iterator[Any]:
    with local_cluster(workers=2, cpus_per_worker=1) as c:
        yield c


def _batch(scene_list: Path, out: Path, address: str) -> subprocess.Popen[str]:
    from geo_hires.detect.ray_local import offline_env

    with offline_env():
        env = dict(os.environ)
    cmd = [sys.executable, "-m", "geo_hires.cli", "batch", str(scene_list), "--out-dir", str(out)]
    cmd += ["--executor", "ray", "--address", address, "--actors", "2", *DETECT]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(out: Path) -> dict[str, dict]:
    """The statuses of the scenes done (a scene's status says ``running`` while it runs)."""
    status = {}
    for p in out.glob("*.status.json"):
        try:
            doc = json.loads(p.read_text())
        except ValueError:  # written atomically, but be safe
            continue
        if doc.get("state") == "done":
            status[p.name.removesuffix(".status.json")] = doc
    return status


def _wait(pred, proc: subprocess.Popen[str], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"batch ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out: {proc.communicate()}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen[str]) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert f"batch: {SCENES} done, 0 failed" in stdout, (stdout, stderr)
    return stderr


def _same_bytes(out: Path, reference: Path) -> None:
    for i in range(SCENES):
        assert (out / f"s{i}.geojson").read_bytes() == (reference / f"s{i}.geojson").read_bytes()


def test_batch_survives_losing_a_node_and_uses_a_new_one(scene_list, reference, cluster, tmp_path):
    calm = tmp_path / "calm"
    start = time.monotonic()
    _finish(_batch(scene_list, calm, cluster.address))
    calm_s = time.monotonic() - start
    _same_bytes(calm, reference)

    out = tmp_path / "out"
    start = time.monotonic()
    proc = _batch(scene_list, out, cluster.address)
    _wait(lambda: len(_done(out)) >= 2, proc)
    victim = sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0]
    from geo_hires.detect.ray_local import offline_env

    # a node joins mid-run (registered and idle: no actor needs it yet), then one is lost: the
    # actor that replaces the lost one must go to the newcomer and take work there. (Adding
    # it after the loss races the batch's end against the new node's first worker start.)
    with offline_env():
        newcomer = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    with_one = len(_done(out))
    finished = {n: (out / f"{n}.geojson").stat().st_mtime_ns for n in _done(out)}
    cluster.remove_node(victim, allow_graceful=False)  # raylet, object store, actors: gone
    lost_at = len(finished)
    stderr = _finish(proc)
    loss_s = time.monotonic() - start

    _same_bytes(out, reference)
    status = _done(out)
    for name, mtime in finished.items():  # scenes finished before the loss were not redone
        assert (out / f"{name}.geojson").stat().st_mtime_ns == mtime
    for i in range(SCENES):  # and no scene was logged done twice
        assert len(re.findall(rf"/s{i}\.tif: \d+ detections", stderr)) == 1, stderr
    assert sum(s["actors_lost"] for s in status.values()) >= 1
    assert sum(s["units_retried"] for s in status.values()) <= 2  # one unit in flight per actor
    later = [status[f"s{i}"]["units_per_node"] for i in range(lost_at, SCENES)]
    assert any(newcomer.node_id in nodes for nodes in later), json.dumps(status, indent=1)
    assert all(victim.node_id not in nodes for nodes in later[1:])  # after the running scene
    assert all(newcomer.node_id not in status[f"s{i}"]["units_per_node"] for i in range(with_one))
    print(
        f"\nbatch of {SCENES} scenes on 2 worker nodes: {calm_s:.1f} s without a loss, "
        f"{loss_s:.1f} s with a node added after scene {with_one} and one lost after scene "
        f"{lost_at}"
    )
