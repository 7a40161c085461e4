"""What one scanner actor costs: CPU seconds per scene megapixel and peak memory (k8s sizing).

A real two-node Ray cluster (``ray.cluster_utils.Cluster``: a head without CPUs, one worker node
with ``--cpus`` CPUs) runs ``run_detect`` with ``--model`` (detect's default) on one scene,
``--cpus`` actors of 1 CPU and ``--threads`` torch threads each — the shape of a Kubernetes
worker pod. Measured from ``/proc``: each actor's CPU time over the scan and its peak RSS
(``VmHWM``), the worker node's raylet (with its object store) and idle workers, the head's
GCS and raylet, and the driver's peak RSS (it merges the detections; on Kubernetes it runs
in the head pod).

    python bench/sizing.py /tmp/geo-hires-bench/synth100.tif --cpus 2 --threads 1
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from geo_hires.detect.ray_local import OFFLINE_ENV, offline_env

# Ray reads some of these at import (whether a 127.0.0.1 address stays loopback): set them first
os.environ.update(OFFLINE_ENV)

import psutil
import ray
from ray.cluster_utils import Cluster

from geo_hires.detect.options import DEFAULT_MODEL, DetectConfig
from geo_hires.detect.ray_executor import RayConfig, RayExecutor
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import run_detect
from geo_hires.scene import open_scene


def _hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process (kernel's high-water mark), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _pid(node: Any, name: str) -> int:
    return int(node.all_processes[name][0].process.pid)


def _node_processes(node: Any, actor_pids: set[int]) -> dict[str, float]:
    """Peak RSS of the worker node's raylet and of its worker processes that are not actors."""
    raylet = psutil.Process(_pid(node, "raylet"))
    others = [p for p in raylet.children(recursive=True) if p.pid not in actor_pids]
    return {
        "raylet_peak_mb": round(_hwm_mb(raylet.pid), 1),
        "other_workers_peak_mb": round(sum(_hwm_mb(p.pid) for p in others), 1),
        "other_workers": len(others),
    }


def measure(scene_path: str, cpus: int, threads: int, model: str) -> dict[str, Any]:
    with offline_env():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "node_ip_address": "127.0.0.1",
            },
        )
        worker = cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        bundle = load_bundle(model)
        cfg = DetectConfig(threads=threads)
        ex = RayExecutor(config=RayConfig(actors=cpus, num_cpus=1.0))
        out = Path(tempfile.mkdtemp()) / "sizing.geojson"
        atexit.register(shutil.rmtree, out.parent, ignore_errors=True)  # nothing left in /tmp
        # warm-up on the same scene places the actors and loads the model; only then measure
        run_detect(scene_path, out, bundle=bundle, config=cfg, executor=ex)
        pids = ray.get([a.pid.remote() for a in ex.actors])
        before = {p: _cpu_s(p) for p in pids}
        start = time.perf_counter()
        result = run_detect(scene_path, out, bundle=bundle, config=cfg, executor=ex)
        wall = time.perf_counter() - start
        cpu = sum(_cpu_s(p) - before[p] for p in pids)
        scene = open_scene(scene_path)
        mp = scene.width * scene.height / 1e6
        row = {
            "model": model,
            "scene": Path(scene_path).name,
            "scene_mp": round(mp, 1),
            "actors": cpus,
            "threads_per_actor": threads,
            "wall_s": round(wall, 2),
            "detections": len(result.detections),
            "actor_cpu_s_per_mp": round(cpu / mp, 4),
            "mp_per_s_per_actor": round(mp / wall / cpus, 2),
            "actor_peak_mb": [round(_hwm_mb(p), 1) for p in pids],
            **_node_processes(worker, set(pids)),
            "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "head_gcs_peak_mb": round(_hwm_mb(_pid(cluster.head_node, "gcs_server")), 1),
            "head_raylet_peak_mb": round(_hwm_mb(_pid(cluster.head_node, "raylet")), 1),
        }
        ex.shutdown()
        return row
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the worker node = actors")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="bundle (default: detect's)")
    ap.add_argument("--out", default="bench/results/sizing.json")
    args = ap.parse_args()
    row = measure(args.scene, args.cpus, args.threads, args.model)
    row["measured"] = time.strftime("%Y-%m-%d")
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
