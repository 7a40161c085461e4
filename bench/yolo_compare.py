"""The comparison users will make (issue #11), one run, same machine, same scenes.

SAHI + our trained YOLO (``AutoDetectionModel`` ultralytics backend, its standard 640-px slices
with 0.2 overlap and its default postprocess) vs ``aircraft_yolo`` (the same YOLO on geo_hires
windows) vs ``aircraft_cascade`` (the LSN everywhere, the same YOLO only around its
candidates) vs ``aircraft_lsn``, on the 14 validation images (AP50, AP50:95, seconds, MP/s,
the fraction of pixels YOLO saw) and, for speed, on a 100 MP synthetic scene; then the survey's
strategies on the validation images: the whole image downsampled x2 and x4 to YOLO's input,
full-resolution patches (SAHI), multi-scale YOLT levels (the same YOLO on a full and a
half-resolution level), the LSN alone, and the cascade. Needs ``pip install sahi``.

    python bench/yolo_compare.py --images ../shared/data/aircraft/train \\
        --labels ../shared/data/aircraft/annotations.csv \\
        --synthetic /tmp/geo-hires-bench/synth100.tif --out bench/results/yolo_compare.json

(ultralytics and SAHI log to stdout, so the results go to ``--out``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geo_hires.detect.options import (
    PRECISIONS,
    DetectConfig,
    native_bf16,
    resolve_precision,
)
from geo_hires.detect.plan import plan_units
from geo_hires.detections import PixelDetections
from geo_hires.errors import NoCRSWarning
from geo_hires.evaluate import evaluate_images
from geo_hires.evaluate.scenes import labelled_scene
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import Level
from geo_hires.models.yolo import ultralytics_env
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene

THREADS = 2
SLICE, OVERLAP = 640, 0.2  # SAHI's standard settings


def _sahi_model(pt: Path, threshold: float) -> Any:
    with ultralytics_env():
        from sahi import AutoDetectionModel

        model = AutoDetectionModel.from_pretrained(  # image_size: slices at their own size;
            model_type="ultralytics", model_path=str(pt), confidence_threshold=threshold,
            device="cpu", image_size=SLICE,  # unset, ultralytics reuses the training imgsz (256)
        )  # fmt: skip
    return model


def _sahi(model: Any, image: np.ndarray, classes: tuple[str, ...]) -> tuple[PixelDetections, int]:
    """SAHI's sliced prediction with its defaults; returns detections and YOLO input pixels."""
    from sahi.predict import get_sliced_prediction
    from sahi.slicing import get_slice_bboxes

    torch.set_num_threads(THREADS)
    with ultralytics_env():
        result = get_sliced_prediction(
            image, model, slice_height=SLICE, slice_width=SLICE,
            overlap_height_ratio=OVERLAP, overlap_width_ratio=OVERLAP, verbose=0,
        )  # fmt: skip
    torch.set_num_threads(THREADS)
    h, w = image.shape[:2]
    slices = get_slice_bboxes(h, w, SLICE, SLICE, True, OVERLAP, OVERLAP)
    seen = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in slices) + SLICE * SLICE  # + full view
    preds = result.object_prediction_list
    boxes = np.array([p.bbox.to_xyxy() for p in preds], float).reshape(-1, 4)
    scores, classes_ = [p.score.value for p in preds], [p.category.id for p in preds]
    return PixelDetections.build(boxes, scores, classes_, class_names=classes), seen


def _rgb(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))


def _window_pixels(scene: Any, card: Any, cfg: DetectConfig) -> int:
    """Level-0 pixels of every window an ultralytics level reads (overlaps counted twice)."""
    units, _ = plan_units(scene, card, cfg)
    total = 0.0
    for u in units:
        if card.levels[u.level].detector != "fcn":
            total += sum((b.x1 - b.x0) * (b.y1 - b.y0) for b in u.blocks) * u.downsample**2
    return int(total)


def _ours(scene: Any, bundle: Any, cfg: DetectConfig, choice: str) -> tuple[Any, float, int]:
    """Detections, seconds and pixels YOLO saw; ``choice`` is resolved for the bundle as
    ``detect --precision`` resolves it."""
    torch.set_num_threads(THREADS)
    cfg = dataclasses.replace(
        cfg, precision=resolve_precision(choice, bundle.card, native_bf16("cpu"))
    )
    start = time.perf_counter()
    r = detect_scene(scene, bundle, cfg)
    secs = time.perf_counter() - start
    seen = _window_pixels(scene, bundle.card, cfg)
    seen += sum(lv.pixels_scanned for lv in r.levels if lv.name == "refine")
    return r.detections, secs, seen


def _downsampled(model: Any, image: np.ndarray, factor: int, cfg: DetectConfig) -> Any:
    """The whole image, resized so its long side is 1/factor of the original, in one pass.

    Resized here, as ultralytics' letterbox would (bilinear, long side to ``imgsz``): the
    refiner's ``predict`` keeps every image at its own scale, so handing it the whole image
    would scan it at full resolution."""
    import cv2

    h, w = image.shape[:2]
    imgsz = 32 * math.ceil(max(h, w) / factor / 32)
    r = imgsz / max(h, w)
    small = cv2.resize(image, (max(round(w * r), 1), max(round(h * r), 1)),
                       interpolation=cv2.INTER_LINEAR)  # fmt: skip
    torch.set_num_threads(THREADS)
    boxes, scores, classes, _ = model.predict(
        [small], imgsz=imgsz, threshold=cfg.score_threshold, threads=THREADS
    )[0]
    boxes = boxes * np.array([w / small.shape[1], h / small.shape[0]] * 2, np.float32)
    return PixelDetections.build(boxes, scores, classes, class_names=model.class_names), imgsz**2


def _score(pairs: list[Any], secs: float, seen: int, mp: float) -> dict[str, Any]:
    res = evaluate_images(pairs).overall
    return {
        "ap50": round(res.ap50, 4), "ap50_95": round(res.ap50_95, 4),
        "seconds": round(secs, 1), "mp_per_s": round(mp / max(secs, 1e-9), 2),
        "yolo_pixel_fraction": round(seen / (mp * 1e6), 3),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--synthetic", help="a large synthetic scene for the speed comparison")
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the scanners' arithmetic, resolved as detect does")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    warnings.simplefilter("ignore", NoCRSWarning)
    cfg = DetectConfig(score_threshold=args.threshold, threads=THREADS)
    bundles = {n: load_bundle(n) for n in ("aircraft_lsn", "aircraft_yolo", "aircraft_cascade")}
    ycard = bundles["aircraft_yolo"].card
    yolo = bundles["aircraft_yolo"].yolo["yolo.pt"]
    full = ycard.levels[0]
    yolt = dataclasses.replace(ycard, levels=(
        dataclasses.replace(full, max_size=80.0),
        Level(name="coarse", target_gsd_m=2 * ycard.gsd_m, downsample=2, min_size=32.0,
                  detector=full.detector, window=full.window, halo=64),
    ))  # fmt: skip
    bundles["yolo_yolt_2levels"] = dataclasses.replace(bundles["aircraft_yolo"], card=yolt)
    sahi_model = _sahi_model(Path(_bundle_pt("aircraft_yolo")), args.threshold)
    card = bundles["aircraft_lsn"].card
    val = card.val_images
    methods = [*bundles, "sahi_yolo", "downsample_x2", "downsample_x4"]
    pairs: dict[str, list[Any]] = {m: [] for m in methods}
    secs = dict.fromkeys(methods, 0.0)
    seen = dict.fromkeys(methods, 0)
    mp = 0.0
    for name in val:
        path = str(Path(args.images) / name)
        scene, truth = labelled_scene(path, args.labels, card)
        for key, bundle in bundles.items():
            dets, s, px = _ours(scene, bundle, cfg, args.precision)
            pairs[key].append((dets, truth))
            secs[key] += s
            seen[key] += px
        start = time.perf_counter()  # SAHI's read counted, as ours and the synthetic scene's
        image = _rgb(path)
        dets, px = _sahi(sahi_model, image, card.classes)
        secs["sahi_yolo"] += time.perf_counter() - start
        pairs["sahi_yolo"].append((dets, truth))
        seen["sahi_yolo"] += px
        for f in (2, 4):
            start = time.perf_counter()
            dets, px = _downsampled(yolo, image, f, cfg)
            secs[f"downsample_x{f}"] += time.perf_counter() - start
            pairs[f"downsample_x{f}"].append((dets, truth))
            seen[f"downsample_x{f}"] += px
        mp += scene.pixels / 1e6
        print(f"{name}: done", file=sys.stderr)
    out: dict[str, Any] = {
        "val_images": len(val), "megapixels": round(mp, 1), "threads": THREADS,
        "score_threshold": args.threshold, "sahi": {"slice": SLICE, "overlap": OVERLAP},
        "precision": args.precision,
        "measured": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out["validation"] = {m: _score(pairs[m], secs[m], seen[m], mp) for m in methods}
    out["cascade_speedup_vs_sahi"] = round(secs["sahi_yolo"] / secs["aircraft_cascade"], 2)
    if args.synthetic:
        out["synthetic"] = _synthetic(args.synthetic, bundles, sahi_model, cfg, args.precision)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2), file=sys.stderr)


def _bundle_pt(name: str) -> str:
    from geo_hires.models.card import bundle_dir

    return str(bundle_dir(name) / "yolo.pt")


def _synthetic(
    path: str, bundles: dict[str, Any], sahi_model: Any, cfg: DetectConfig, choice: str
) -> Any:
    scene = open_scene(path)
    mp = scene.pixels / 1e6
    rows: dict[str, Any] = {"megapixels": round(mp, 1)}
    for key in ("aircraft_lsn", "aircraft_cascade", "aircraft_yolo"):
        _, s, px = _ours(scene, bundles[key], cfg, choice)
        rows[key] = {"seconds": round(s, 1), "mp_per_s": round(mp / s, 2),
                     "yolo_pixel_fraction": round(px / scene.pixels, 3)}  # fmt: skip
        print(f"synthetic {key}: {s:.1f} s", file=sys.stderr)
    start = time.perf_counter()
    image = _rgb(path)
    _, px = _sahi(sahi_model, image, bundles["aircraft_lsn"].card.classes)
    s = time.perf_counter() - start
    rows["sahi_yolo"] = {"seconds": round(s, 1), "mp_per_s": round(mp / s, 2),
                         "yolo_pixel_fraction": round(px / scene.pixels, 3)}  # fmt: skip
    rows["cascade_speedup_vs_sahi"] = round(s / rows["aircraft_cascade"]["seconds"], 2)
    return rows


if __name__ == "__main__":
    main()
