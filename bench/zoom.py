"""Selective zoom, one run: AP against the share of fine pixels on every GSD, and throughput.

1. The 14 validation images of ``aircraft_lsn`` (never trained on, by the LSN or the policy),
   resampled to each ``--gsds`` value (:mod:`geo_hires.train.gsd`), and a labelled synthetic
   scene whose small aircraft only the fine level finds: both passes are recorded once per
   image (:func:`geo_hires.train.zoom_replay.record_image`), then every decision is replayed:
   ``rl`` (the shipped policy with its safety rule; its probability cut at 0.05...0.95),
   ``rl_unguarded`` (the policy alone), ``gate`` (evidence thresholds), random choices at the
   same shares (mean of 5 seeds), ``none`` and ``all``. AP50 and AP50:95 against the
   fine-pixel share; a PNG plot for ``docs/``.
2. End-to-end throughput of ``detect`` per mode on a large synthetic scene, divided by the raw
   windowed decode of the same file (every 1024 px block read, nothing else).

    python bench/zoom.py --images ../shared/data/aircraft/train \\
        --labels ../shared/data/aircraft/annotations.csv \\
        --synthetic /tmp/geo-hires-bench/synth144.tif --out bench/results/zoom.json \\
        --plot docs/zoom_curve.png
"""

from __future__ import annotations

import argparse
import dataclasses
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

from geo_hires.detect.options import DetectConfig, ZoomConfig, ZoomMode
from geo_hires.detect.zoom import choose, window_evidence
from geo_hires.errors import NoCRSWarning
from geo_hires.evaluate.scenes import labelled_scene
from geo_hires.models.bundle import load_bundle
from geo_hires.models.zoom_policy import policy_features
from geo_hires.pipeline import detect_scene
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
from geo_hires.train.gsd import at_gsd, scaled_truth
from geo_hires.train.zoom import evaluate_choices, zoomable_gsds
from geo_hires.train.zoom_replay import record_image

CUTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _record(items: list[tuple[str, Any]], model: Any, window: int) -> list[Any]:
    """Both passes of each ``(scene path, truth)``, once."""
    out = []
    for path, truth in items:
        scene = open_scene(path)
        out.append((record_image(scene, model, model.card, truth, window), scene))
    return out


def _at_gsds(val: list[str], labels: str, card: Any, gsds: list[float], work: Path,
             ) -> dict[str, list[tuple[str, Any]]]:  # fmt: skip
    """The validation images and their truth at each GSD (resampled copies in ``work``)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for g in gsds:
        for path in val:
            _, truth = labelled_scene(path, labels, card, class_names=card.classes)
            copy = work / f"gsd_{g:g}m" / f"{Path(path).stem}.tif"
            factor = at_gsd(path, g, copy, native=card.gsd_m)
            out.setdefault(f"{g:g}m", []).append((str(copy), scaled_truth(truth, factor)))
    return out


def _synthetic_small(work: Path, card: Any) -> list[tuple[str, Any]]:
    """A 4000 x 4000 synthetic scene whose aircraft are its truth (the vehicles are not the
    model's): many of them small enough that only the fine level reports them."""
    path = work / "synth_small_16mp.tif"
    truth = write_synthetic(path, SynthSpec(width=4000, height=4000, seed=11,
                                            density=Density.DENSE))  # fmt: skip
    keep = truth.classes == list(truth.class_names).index("aircraft")
    planes = truth.take(keep)
    planes = dataclasses.replace(planes, classes=np.zeros(len(planes), np.int64),
                                 class_names=card.classes)  # fmt: skip
    return [(str(path), planes)]


def _curves(replays: list[Any], card: Any, policy: Any) -> dict[str, list[dict[str, Any]]]:
    feats = [
        policy_features(
            r.evidence, r.cores, policy.spec.grid, policy.spec.split_for(card.gsd_m, s.gsd_m)
        )
        for r, s in replays
    ]
    scores = {"rl": [policy.probabilities(f) for f in feats],
              "gate": [window_evidence(r.evidence, r.cores) for r, _ in replays]}  # fmt: skip
    forced = [policy.forced(f) for f in feats]
    out: dict[str, list[dict[str, Any]]] = {"rl": [], "rl_unguarded": [], "gate": [], "random": []}
    for cut in CUTS:
        chosen = [(s >= cut) | f for s, f in zip(scores["rl"], forced, strict=True)]
        out["rl"].append({"cut": cut, **evaluate_choices(replays, card, chosen)})
        alone = [s >= cut for s in scores["rl"]]
        out["rl_unguarded"].append({"cut": cut, **evaluate_choices(replays, card, alone)})
        gate = [s >= cut for s in scores["gate"]]
        out["gate"].append({"cut": cut, **evaluate_choices(replays, card, gate)})
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
    out["rl_default"] = [evaluate_choices(replays, card, [policy.decide(f) for f in feats])]
    cut = ZoomConfig().gate_threshold
    out["gate_default"] = [evaluate_choices(replays, card, [s >= cut for s in scores["gate"]])]
    return out


def _throughput(path: str, bundle: Any, modes: list[ZoomMode]) -> dict[str, Any]:
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
        z = r.zoom()
        rows[mode] = {"seconds": round(r.seconds, 1), "mp_per_s": round(mp / r.seconds, 2),
                      "ratio_to_decode": round(decode / r.seconds, 3),
                      "fine_pixels_fraction": z["fine_pixels_fraction"],
                      "detections": len(r.detections)}  # fmt: skip
        print(f"{mode}: {r.seconds:.1f} s", file=sys.stderr)
    return rows


def _plot(variants: dict[str, Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants), 3.4), dpi=120,
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, (name, curves) in zip(axes[0], variants.items(), strict=True):
        for mode, style in (("rl", "o-"), ("gate", "s-"), ("random", "^--")):
            pts = sorted((r["fine_pixels_fraction"], r["ap50"]) for r in curves[mode])
            ax.plot(*zip(*pts, strict=True), style, label=mode, markersize=3)
        for mode, marker in (("all", "*"), ("none", "x"), ("rl_default", "D")):
            r = curves[mode][0]
            ax.plot([r["fine_pixels_fraction"]], [r["ap50"]], marker, markersize=8, label=mode)
        ax.set_title(name)
        ax.set_xlabel("fine pixels")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AP50")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--model", default="aircraft_lsn", help="a scanning bundle with a policy")
    ap.add_argument("--gsds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--synthetic", help="a large synthetic scene for throughput")
    ap.add_argument("--work", default="/tmp/geo-hires-bench")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore", NoCRSWarning)
    model = load_bundle(args.model)
    card, policy = model.card, model.policy
    if policy is None:
        raise SystemExit(f"{args.model} has no zoom policy: run geo-hires train-zoom first")
    window = policy.spec.window
    work = Path(args.work)
    val = [str(Path(args.images) / n) for n in card.val_images]
    out: dict[str, Any] = {"model": args.model, "window": window,
                           "safe_score": policy.spec.safe_score,
                           "measured": time.strftime("%Y-%m-%d"), "variants": {}}  # fmt: skip
    gsds, one_level = zoomable_gsds(args.gsds, card, val[0], work)
    out["one_level_gsds"] = list(one_level)  # levels fold: no window to zoom, rl is all
    variants = _at_gsds(val, args.labels, card, list(gsds), work)
    variants["synthetic_small"] = _synthetic_small(work, card)
    for name, items in variants.items():
        out["variants"][name] = _curves(_record(items, model, window), card, policy)
        v = out["variants"][name]
        print(f"{name}: all {v['all'][0]['ap50']:.3f}, rl {v['rl_default'][0]['ap50']:.3f} at "
              f"{v['rl_default'][0]['fine_pixels_fraction']:.3f}", file=sys.stderr)  # fmt: skip
    out["rl_keeps_of_all"] = {
        k: round(v["rl_default"][0]["ap50"] / max(v["all"][0]["ap50"], 1e-9), 4)
        for k, v in out["variants"].items()
    }
    _plot(out["variants"], args.plot, f"{args.model}: AP50 against fine pixels")
    if args.synthetic:
        out["throughput"] = _throughput(args.synthetic, model,
                                        ["all", "gate", "rl", "none"])  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
