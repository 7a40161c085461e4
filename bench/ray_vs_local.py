"""Ray executor vs local executor on the same scene with the same CPUs, and peak memory.

Both runs use the same ``DetectConfig`` (2 torch threads). The local cluster gets 2 CPUs and one
scanner actor reserving both, so each side has the whole machine. Reported: seconds of each
(both measured warm: the local executor after one untimed run, Ray with the cluster and actor
already up; the cold start on its own), their
ratio (goal <= 1.15 at 100 MP), and the peak summed RSS of the driver and every Ray process
(sampled every 0.2 s), with the local run's peak for comparison.

    python bench/ray_vs_local.py /tmp/geo-hires-bench/synth100.tif
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time

import psutil
import torch

from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.ray_executor import RayConfig, RayExecutor
from geo_hires.detect.ray_local import ensure_ray
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene


class PeakRss:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scene")
    ap.add_argument("--model", default="aircraft_lsn")
    ap.add_argument("--memory-only", action="store_true", help="one Ray run, for peak memory")
    args = ap.parse_args()
    model = load_bundle(args.model)
    scene = open_scene(args.scene)
    cfg = DetectConfig()
    if args.memory_only:
        ensure_ray(num_cpus=2, object_store_mb=512)
        ex = RayExecutor(config=RayConfig(actors=1, num_cpus=2))
        with PeakRss() as mem:
            start = time.perf_counter()
            detect_scene(scene, model, config=cfg, executor=ex)
        ex.shutdown()
        print(
            json.dumps(
                {
                    "scene": args.scene,
                    "megapixels": round(scene.pixels / 1e6, 1),
                    "ray_s": round(time.perf_counter() - start, 1),
                    "peak_rss_ray_driver_plus_workers_mb": round(mem.peak / 2**20),
                },
                indent=2,
            )
        )
        return
    local_ex = LocalExecutor(device=torch.device("cpu"))
    with PeakRss() as local_mem:
        detect_scene(scene, model, config=cfg, executor=local_ex)  # warm, as Ray's is below
        start = time.perf_counter()
        local = detect_scene(scene, model, config=cfg, executor=local_ex)
        local_s = time.perf_counter() - start
    start = time.perf_counter()
    ensure_ray(num_cpus=2, object_store_mb=512)
    ex = RayExecutor(config=RayConfig(actors=1, num_cpus=2))
    with PeakRss() as ray_mem:
        cold = time.perf_counter()
        detect_scene(scene, model, config=cfg, executor=ex)  # starts the actor
        cold_s = time.perf_counter() - cold + (cold - start)
        warm = time.perf_counter()
        remote = detect_scene(scene, model, config=cfg, executor=ex)
        ray_s = time.perf_counter() - warm
    ex.shutdown()
    print(
        json.dumps(
            {
                "scene": args.scene,
                "megapixels": round(scene.pixels / 1e6, 1),
                "local_s": round(local_s, 2),
                "ray_warm_s": round(ray_s, 2),
                "ray_cold_s_incl_cluster_start": round(cold_s, 2),
                "overhead_ratio_warm": round(ray_s / local_s, 3),
                "same_detections": len(local.detections) == len(remote.detections)
                and bool((local.detections.boxes == remote.detections.boxes).all()),
                "peak_rss_local_mb": round(local_mem.peak / 2**20),
                "peak_rss_ray_driver_plus_workers_mb": round(ray_mem.peak / 2**20),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
