"""Block scan vs naive per-window inference of the same network over the same windows.

Naive: YOLT windows (``--window`` px, overlap 0.25 and 0.5), the network run on each window on
its own, peaks decoded in each window's core (windows own disjoint cores, so there is nothing to
deduplicate). Block scan: the shared-overlap scanner with ``--core`` blocks. Both at full
resolution on the same scene; reported: seconds of each, the speed ratio and how many
detections agree (same box within 1 px).

    python bench/block_vs_naive.py demo/airports.tif --model aircraft_lsn
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from geo_hires.models.registry import load_model
from geo_hires.scan import halo_for, plan_blocks, scan
from geo_hires.tiling import plan_tiles
from rasterio.windows import Window

from geo_hires.config import ScaleLevel, SmallScenePolicy, TilingConfig
from geo_hires.models.codec import decode_peaks
from geo_hires.scene import SceneReader, open_scene


def _naive(model, reader, window: int, overlap: float, thr: float) -> tuple[np.ndarray, float]:
    cfg = TilingConfig(
        levels=(ScaleLevel(name="full", window=window, overlap=overlap),),
        small_scene=SmallScenePolicy.PAD,
    )
    (plan,) = plan_tiles(reader.scene, cfg)
    s, out = model.stride, []
    start = time.perf_counter()
    for t in plan.tiles:
        x = torch.from_numpy(reader.read(t.window).image)[None].contiguous(
            memory_format=torch.channels_last
        )
        with torch.inference_mode():
            y = model(x)[0]
        ox, oy = int(t.window.col_off) // s, int(t.window.row_off) // s
        c = t.core
        keep = (
            int(c.row_off) // s,
            math.ceil((c.row_off + c.height) / s),
            int(c.col_off) // s,
            math.ceil((c.col_off + c.width) / s),
        )
        b, _, _ = decode_peaks(
            y,
            num_classes=model.spec.num_classes,
            stride=s,
            origin=(oy, ox),
            keep=keep,
            threshold=thr,
        )
        out.append(b)
    return np.concatenate(out), time.perf_counter() - start


def _blocks(model, reader, core: int, thr: float) -> tuple[np.ndarray, float]:
    sc = reader.scene
    blocks = plan_blocks(
        sc.width,
        sc.height,
        core=core,
        halo=halo_for(model.receptive_field, model.stride),
        stride=model.stride,
    )

    def read(b):
        w = reader.read(Window(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0))
        return w.image, w.valid

    start = time.perf_counter()
    out = [
        decode_peaks(
            o.out,
            num_classes=model.spec.num_classes,
            stride=model.stride,
            origin=o.origin,
            keep=o.keep,
            threshold=thr,
        )[0]
        for o in scan(model, blocks, read, batch_size=1, device=torch.device("cpu"))
    ]
    return np.concatenate(out), time.perf_counter() - start


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    ka = {tuple(np.round(x).astype(int)) for x in a}
    kb = {tuple(np.round(x).astype(int)) for x in b}
    return len(ka & kb) / max(len(ka | kb), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scene")
    ap.add_argument("--model", default="aircraft_lsn")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--core", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, card = load_model(args.model)
    model = model.to(memory_format=torch.channels_last)
    results = {}
    with SceneReader(open_scene(args.scene)) as reader:
        reader.stretch()
        blocks, tb = _blocks(model, reader, args.core, card.score_threshold)
        for overlap in (0.25, 0.5):
            naive, tn = _naive(model, reader, args.window, overlap, card.score_threshold)
            results[f"overlap_{overlap}"] = {
                "naive_s": round(tn, 2),
                "block_s": round(tb, 2),
                "speedup": round(tn / tb, 2),
                "naive_dets": len(naive),
                "block_dets": len(blocks),
                "agreement": round(_agree(naive, blocks), 4),
            }
    print(
        json.dumps(
            {"scene": args.scene, "window": args.window, "core": args.core, **results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
