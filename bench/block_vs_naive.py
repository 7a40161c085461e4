"""Block scan vs naive per-window inference of the same network over the same windows.

Naive: YOLT windows (``--window`` px, overlap 0.25 and 0.5), the network run on each window on
its own, peaks decoded in each window's core (windows own disjoint cores, so there is nothing to
deduplicate). Block scan: the shared-overlap scanner with ``--core`` blocks. Both at full
resolution on the same scene; reported: seconds of each, the speed ratio and how many
detections agree (same box within 1 px); each side the best of two runs after a warm-up, since
every new block shape costs the first pass a primitive build. Both run the network in
``--precision`` (fp32 by default; bf16 autocast as ``--precision auto`` picks on a CPU with
native bf16) through the same ``network_output``, in channels-last form.

    python bench/block_vs_naive.py demo/airports.tif --core 1024 [--precision bf16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch
from rasterio.windows import Window

from geo_hires.detect.blocks import batch_blocks, halo_for, plan_blocks
from geo_hires.detect.forward import forward_batch, network_output, prepare
from geo_hires.detect.options import Precision
from geo_hires.models.bundle import load_bundle
from geo_hires.models.codec import decode_peaks
from geo_hires.scene import SceneReader, open_scene


def _axis(length: int, window: int, overlap: float) -> list[tuple[int, int, int]]:
    """YOLT windows along one axis: ``(origin, core start, core stop)``; the last window is
    shifted inward to end on the edge, cores meet in the middle of each overlap."""
    stride = max(1, window - round(window * overlap))
    starts = list(range(0, max(1, length - window + 1), stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    seams = [(a + b + window) // 2 for a, b in itertools.pairwise(starts)]
    bounds = [0, *seams, length]
    return [(o, bounds[i], bounds[i + 1]) for i, o in enumerate(starts)]


def _naive(model, reader, window: int, overlap: float, thr: float, precision: Precision):
    sc = reader.scene
    _s, out = model.stride, []
    start = time.perf_counter()
    for y0, cy0, cy1 in _axis(sc.height, window, overlap):
        for x0, cx0, cx1 in _axis(sc.width, window, overlap):
            win, core = (x0, y0, window), (cx0, cy0, cx1, cy1)
            out.append(_window_peaks(model, reader, win, core, thr, precision))
    return np.concatenate(out), time.perf_counter() - start


def _window_peaks(model, reader, win, core, thr: float, precision: Precision) -> np.ndarray:
    """The network on one window on its own; peaks decoded in the window's core."""
    (x0, y0, size), (cx0, cy0, cx1, cy1), s = win, core, model.stride
    x = torch.from_numpy(reader.read(Window(x0, y0, size, size)).image)[None]
    y = network_output(model, x.contiguous(memory_format=torch.channels_last), precision)[0]
    keep = (cy0 // s, math.ceil(cy1 / s), cx0 // s, math.ceil(cx1 / s))
    return decode_peaks(y, num_classes=model.spec.num_classes, stride=s, origin=(y0 // s, x0 // s),
                        keep=keep, threshold=thr)[0]  # fmt: skip


def _blocks(model, reader, core: int, thr: float, precision: Precision) -> tuple[np.ndarray, float]:
    sc = reader.scene
    blocks = plan_blocks(
        sc.width,
        sc.height,
        core=core,
        halo=halo_for(model.receptive_field, model.stride),
        stride=model.stride,
    )

    cpu = torch.device("cpu")
    start = time.perf_counter()
    out = []
    for batch in batch_blocks(blocks, 1):
        items = []
        for b in batch:
            w = reader.read(Window(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0))
            items.append((b, w.image, w.valid))
        for o in forward_batch(model, items, cpu, precision):
            out.append(decode_peaks(o.out, num_classes=model.spec.num_classes,
                                    stride=model.stride, origin=o.origin, keep=o.keep,
                                    threshold=thr)[0])  # fmt: skip
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
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    card = bundle.card
    model = prepare(bundle.network(), torch.device("cpu"))[0]
    results = {}
    with SceneReader(open_scene(args.scene)) as reader:
        reader.stretch()
        thr, precision = card.score_threshold, args.precision
        _blocks(model, reader, args.core, thr, precision)  # warm: each new shape costs once
        blocks, tb = min((_blocks(model, reader, args.core, thr, precision) for _ in range(2)),
                         key=lambda r: r[1])  # fmt: skip
        for overlap in (0.25, 0.5):
            naive, tn = min(
                (_naive(model, reader, args.window, overlap, thr, precision) for _ in range(2)),
                key=lambda r: r[1],
            )
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
            {
                "scene": args.scene,
                "window": args.window,
                "core": args.core,
                "precision": args.precision,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
