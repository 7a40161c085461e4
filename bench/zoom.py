"""Selective zoom (issue #12), one run: AP against the share of fine pixels, and throughput.

1. The 14 validation images of ``aircraft_lsn`` (never trained on, by the LSN or the policy)
   and a mosaic of them (4 x 4, ~105 MP): both passes are recorded once per image
   (:func:`geo_hires.train.zoom_replay.record_image`), then every decision is replayed: ``rl`` (the
   shipped policy, its probability cut at 0.05...0.95), ``gate`` (evidence thresholds), random
   choices at the same shares (mean of 5 seeds), ``none`` and ``all``. AP50 and AP50:95 against
   the fine-pixel share; a PNG plot for ``docs/``.
2. End-to-end throughput of ``detect`` per mode on a large synthetic scene, divided by the raw
   windowed decode of the same file (every 1024 px block read, nothing else).

    python bench/zoom.py --images ../shared/data/aircraft/train \\
        --labels ../shared/data/aircraft/annotations.csv \\
        --synthetic /tmp/geo-hires-bench/synth144.tif --out bench/results/zoom.json \\
        --plot docs/zoom_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.zoom import choose, window_evidence
from geo_hires.errors import NoCRSWarning
from geo_hires.evaluate.scenes import labelled_scene
from geo_hires.labels import labels_for
from geo_hires.models.bundle import load_bundle
from geo_hires.models.zoom_policy import policy_features
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene
from geo_hires.train.zoom import evaluate_choices
from geo_hires.train.zoom_replay import record_image

CUTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _mosaic(paths: list[str], labels: str, out: Path, class_map: dict[str, str]) -> Path:
    """4 x 4 of the validation images (the first 16, repeating), labels moved with them."""
    side, grid = 2560, 4
    tiles = [paths[i % len(paths)] for i in range(grid * grid)]
    rings, names = [], []
    profile = {"driver": "GTiff", "width": side * grid, "height": side * grid, "count": 3,
               "dtype": "uint8", "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate"}  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        for k, path in enumerate(tiles):
            r, c = divmod(k, grid)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    dst.write(src.read([1, 2, 3]), window=Window(c * side, r * side, side, side))
            lab = labels_for(path, labels)
            for ring, n in zip(lab.rings, lab.names, strict=True):
                rings.append(ring + np.array([c * side, r * side]))
                names.append(class_map.get(n, n))
    with open(out.with_suffix(".txt"), "w") as fh:  # DOTA lines: any ring, pixel space
        for ring, n in zip(rings, names, strict=True):
            box = [ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()]
            quad = [box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]]
            fh.write(" ".join(f"{v:.1f}" for v in quad) + f" {n} 0\n")
    return out


def _record(paths: list[str], labels: str, model: Any, card: Any, window: int) -> list[Any]:
    out = []
    for path in paths:
        scene, truth = labelled_scene(path, labels, card, class_names=card.classes)
        out.append((record_image(scene, model, card, truth, window), scene))
    return out


def _curves(replays: list[Any], card: Any, policy: Any) -> dict[str, list[dict[str, Any]]]:
    scores = {
        "rl": [policy.probabilities(policy_features(r.evidence, r.cores, policy.spec.grid,
                                                    policy.spec.split_px)) for r, _ in replays],
        "gate": [window_evidence(r.evidence, r.cores) for r, _ in replays],
    }  # fmt: skip
    out: dict[str, list[dict[str, Any]]] = {"rl": [], "gate": [], "random": []}
    for mode in ("rl", "gate"):
        for cut in CUTS:
            chosen = [s >= cut for s in scores[mode]]
            out[mode].append({"cut": cut, **evaluate_choices(replays, card, chosen)})
    for share in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        rows = []
        for seed in range(5):
            z = ZoomConfig(mode="random", budget=share, seed=seed)
            rows.append(evaluate_choices(replays, card, [choose(z, s) for s in scores["gate"]]))
        out["random"].append({"budget": share, **{k: round(float(np.mean([r[k] for r in rows])), 4)
                                                  for k in rows[0]}})  # fmt: skip
    n = [len(r.fine) for r, _ in replays]
    out["all"] = [evaluate_choices(replays, card, [np.ones(k, bool) for k in n])]
    out["none"] = [evaluate_choices(replays, card, [np.zeros(k, bool) for k in n])]
    out["rl_default"] = [evaluate_choices(replays, card, [s >= 0.5 for s in scores["rl"]])]
    gate = ZoomConfig().gate_threshold
    out["gate_default"] = [evaluate_choices(replays, card, [s >= gate for s in scores["gate"]])]
    return out


def _throughput(path: str, bundle: Any, modes: list[str]) -> dict[str, Any]:
    scene = open_scene(path)
    mp = scene.pixels / 1e6
    start = time.perf_counter()
    with rasterio.open(path) as src:
        for y in range(0, scene.height, 1024):
            for x in range(0, scene.width, 1024):
                src.read(window=Window(x, y, 1024, 1024))
    decode = time.perf_counter() - start
    rows: dict[str, Any] = {"megapixels": round(mp, 1), "decode_s": round(decode, 1),
                            "decode_mp_per_s": round(mp / decode, 1)}  # fmt: skip
    for mode in modes:
        torch.set_num_threads(2)
        r = detect_scene(scene, bundle, DetectConfig(zoom=ZoomConfig(mode=mode)))
        z = r.zoom(ZoomConfig(mode=mode))
        rows[mode] = {"seconds": round(r.seconds, 1), "mp_per_s": round(mp / r.seconds, 2),
                      "ratio_to_decode": round(decode / r.seconds, 3),
                      "fine_pixels_fraction": z["fine_pixels_fraction"],
                      "detections": len(r.detections)}  # fmt: skip
        print(f"{mode}: {r.seconds:.1f} s", file=sys.stderr)
    return rows


def _plot(curves: dict[str, Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mode, style in (("rl", "o-"), ("gate", "s-"), ("random", "^--")):
        pts = sorted((r["fine_pixels_fraction"], r["ap50"]) for r in curves[mode])
        ax.plot(*zip(*pts, strict=True), style, label=mode, markersize=4)
    for mode, marker in (("all", "*"), ("none", "x")):
        r = curves[mode][0]
        ax.plot([r["fine_pixels_fraction"]], [r["ap50"]], marker, markersize=10, label=mode)
    ax.set_xlabel("fraction of fine (full-resolution) pixels processed")
    ax.set_ylabel("AP50")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--synthetic", help="a large synthetic scene for throughput")
    ap.add_argument("--work", default="/tmp/geo-hires-bench")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore", NoCRSWarning)
    model = load_bundle("aircraft_lsn")
    card = model.card
    if model.policy is None:
        raise SystemExit("aircraft_lsn has no zoom policy: run geo-hires train-zoom first")
    window = model.policy.spec.window
    val = [str(Path(args.images) / n) for n in card.extra["training"]["val_images"]]
    out: dict[str, Any] = {"window": window, "measured": time.strftime("%Y-%m-%d")}
    replays = _record(val, args.labels, model, card, window)
    out["validation"] = _curves(replays, card, model.policy)
    mosaic = _mosaic(val, args.labels, Path(args.work) / "val_mosaic.tif",
                     card.extra["training"]["class_map"])  # fmt: skip
    mreplay = _record([str(mosaic)], str(mosaic.with_suffix(".txt")), model, card, window)
    out["mosaic"] = _curves(mreplay, card, model.policy)
    _plot(out["validation"], args.plot, "aircraft_lsn, 14 validation images")
    if args.synthetic:
        out["throughput"] = _throughput(args.synthetic, model,
                                        ["all", "gate", "rl", "none"])  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
