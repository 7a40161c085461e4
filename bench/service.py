"""The HTTP service's overhead, and status polling under load.

1. Overhead: one scene submitted by URI to a running ``geo-hires serve`` (POST → poll every
   0.2 s → GET result), against ``run_detect`` on the same Ray executor (one scanner actor,
   cluster and actor already up) in this process. Each side runs alone with the whole machine.
   Goal: ratio <= 1.15 at 100 MP.
2. Polling: with ``--jobs`` jobs submitted (the runner busy with one, the rest queued),
   ``--polls`` sequential ``GET /v1/jobs/{id}`` calls; p50 and p99 latency.

    python bench/service.py /tmp/geo-hires-bench/synth100.tif [--small SCENE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.harness import TOKENS, serve_process

AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}


def _wait(url: str, job_id: str, poll_s: float = 0.2) -> dict:
    while True:
        job = requests.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=60).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll_s)


def through_service(scene: Path, small: Path, jobs: int, polls: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        roots = (scene.parent.resolve(), small.parent.resolve())
        with serve_process(Path(tmp), roots) as (_proc, url):
            warm = requests.post(f"{url}/v1/jobs", json={"uri": str(small)}, headers=AUTH).json()
            _wait(url, warm["id"])  # actors up, model loaded: what a running service has
            t0 = time.perf_counter()
            job = requests.post(f"{url}/v1/jobs", json={"uri": str(scene)}, headers=AUTH).json()
            done = _wait(url, job["id"])
            body = requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=AUTH).content
            seconds = time.perf_counter() - t0
            ids = [
                requests.post(f"{url}/v1/jobs", json={"uri": str(small)}, headers=AUTH).json()["id"]
                for _ in range(jobs)
            ]
            lat = []
            for i in range(polls):
                t = time.perf_counter()
                r = requests.get(f"{url}/v1/jobs/{ids[i % jobs]}", headers=AUTH, timeout=60)
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
            states = [requests.get(f"{url}/v1/jobs/{i}", headers=AUTH).json()["state"] for i in ids]
    lat.sort()
    return {
        "seconds": seconds,
        "state": done["state"],
        "detections": done["detections"],
        "bytes": len(body),
        "poll_p50_ms": 1000 * statistics.median(lat),
        "poll_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
        "polls": polls,
        "jobs_submitted": jobs,
        "states_during_polls": {s: states.count(s) for s in set(states)},
    }


def direct(scene: Path, small: Path) -> dict:
    from geo_hires.detect.options import DEFAULT_MODEL
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.detect.ray_local import ensure_ray
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import Outputs, run_detect

    ensure_ray(num_cpus=2)
    executor = RayExecutor(config=RayConfig(actors=1, num_cpus=1.0))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(DEFAULT_MODEL)  # the model a job that names none runs
        run_detect(small, Path(tmp) / "warm.geojson", bundle=bundle, executor=executor)
        t0 = time.perf_counter()
        outputs = Outputs(files=(Path(tmp) / f"{scene.stem}.geojson", Path(tmp) / "x.gpkg"),
                          quicklook=Path(tmp) / "x.png")  # fmt: skip
        res = run_detect(scene, outputs, bundle=bundle, executor=executor)
        seconds = time.perf_counter() - t0
    executor.shutdown()
    return {"seconds": seconds, "detections": len(res.detections)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--small", type=Path, help="a small scene for warm-up and polling jobs")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--polls", type=int, default=400)
    args = ap.parse_args()
    small = args.small or Path(tempfile.gettempdir()) / "geo_hires_service_small.tif"
    if not small.exists():
        from geo_hires.scene import SynthSpec, write_synthetic

        write_synthetic(small, SynthSpec(width=2000, height=2000, seed=5))
    service = through_service(args.scene.resolve(), small.resolve(), args.jobs, args.polls)
    base = direct(args.scene.resolve(), small.resolve())
    out = {
        "scene": args.scene.name,
        "service": service,
        "direct_ray": base,
        "ratio": service["seconds"] / base["seconds"],
        "same_detections": service["detections"] == base["detections"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
