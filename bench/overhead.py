"""Pipeline overhead: end-to-end ``detect_scene`` vs the bare network over the same pixels.

The bare run feeds random tensors of exactly the block shapes the pipeline used (every level,
halos included) through the same folded network, with no reads, decoding or merging; the ratio
of the two is the pipeline's overhead (goal: <= 1.20).

    python bench/overhead.py demo/airports.tif
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import plan_units
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene


def bare_inputs(card, scene, cfg: DetectConfig) -> list[torch.Tensor]:
    """Random tensors of the planned block shapes (halos included), made before any clock
    starts: drawing 100 MP of random numbers takes seconds the network does not spend."""
    units, _ = plan_units(scene, card, cfg)
    shapes = [b.shape for u in units for b in u.blocks]
    return [torch.rand(1, 3, h, w).contiguous(memory_format=torch.channels_last) for h, w in shapes]


def bare_seconds(model, inputs: list[torch.Tensor]) -> float:
    """The network alone over ``inputs``."""
    start = time.perf_counter()
    with torch.inference_mode():
        for x in inputs:
            model(x)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scene")
    ap.add_argument("--model", default="aircraft_lsn")
    ap.add_argument("--core", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    bundle = load_bundle(args.model)
    card = bundle.card
    model = bundle.network().eval().to(memory_format=torch.channels_last)
    scene = open_scene(args.scene)
    cfg = DetectConfig(core=args.core, batch_size=1)
    inputs = bare_inputs(card, scene, cfg)
    detect_scene(scene, bundle, cfg, executor=LocalExecutor(device=torch.device("cpu")))  # warm
    bare_seconds(model, inputs[:2])  # warm, as the pipeline was
    e2e, bare = [], []
    for _ in range(args.repeat):  # interleaved, best of N: this machine is noisy
        start = time.perf_counter()
        detect_scene(scene, bundle, cfg, executor=LocalExecutor(device=torch.device("cpu")))
        e2e.append(time.perf_counter() - start)
        bare.append(bare_seconds(model, inputs))
    print(
        json.dumps(
            {
                "scene": args.scene,
                "megapixels": round(scene.pixels / 1e6, 1),
                "end_to_end_s": round(min(e2e), 2),
                "bare_network_s": round(min(bare), 2),
                "overhead_ratio": round(min(e2e) / min(bare), 3),
                "end_to_end_mp_per_s": round(scene.pixels / 1e6 / min(e2e), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
