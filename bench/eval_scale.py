"""Scoring a big scene: ``evaluate`` as groups of overlapping boxes vs as one COCO image.

Synthetic truth (boxes 10-60 px over a square that grows with N, three classes), predictions
jittered around 80 % of them plus N/4 false alarms, random scores. Both ways in one run, with
their scores compared (equal: the grouping changes no match). One image is quadratic in Python
(pycocotools' matching loop), so ``--whole-up-to`` skips it above that N.

    python bench/eval_scale.py --sizes 500 3000 30000 --out bench/results/eval_scale.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import geo_hires.evaluate.coco as coco
from geo_hires.detections import PixelDetections
from geo_hires.evaluate import evaluate


def scene(n: int, seed: int) -> tuple[PixelDetections, PixelDetections]:
    rng = np.random.default_rng(seed)
    side = 40000 * (n / 3000) ** 0.5
    xy = rng.uniform(0, side, (n, 2))
    names = ["a", "b", "c"]
    truth = PixelDetections.build(
        np.c_[xy, xy + rng.uniform(10, 60, (n, 2))], np.ones(n), rng.integers(0, 3, n),
        class_names=names,
    )  # fmt: skip
    hit = rng.random(n) < 0.8
    alarms = rng.uniform(0, side, (n // 4, 2))
    boxes = np.r_[(truth.boxes + rng.normal(0, 4, (n, 4)))[hit], np.c_[alarms, alarms + 30]]
    classes = np.r_[truth.classes[hit], rng.integers(0, 3, n // 4)]
    return PixelDetections.build(boxes, rng.random(len(boxes)), classes, class_names=names), truth


def timed(pred: PixelDetections, truth: PixelDetections) -> tuple[float, coco.EvalResult]:
    start = time.perf_counter()
    result = evaluate(pred, truth)
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 3000, 30000])
    ap.add_argument("--whole-up-to", type=int, default=5000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        pred, truth = scene(n, seed=n)
        grouped_s, grouped = timed(pred, truth)
        row = {"truths": n, "predictions": len(pred), "grouped_s": round(grouped_s, 2)}
        if n <= args.whole_up_to:
            saved, coco.islands = coco.islands, lambda pred, truth: [(pred, truth)]
            whole_s, whole = timed(pred, truth)
            coco.islands = saved
            row |= {"one_image_s": round(whole_s, 2), "speedup": round(whole_s / grouped_s, 1),
                    "same_scores": grouped == whole}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        doc = {"date": time.strftime("%Y-%m-%d"), "rows": rows}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
