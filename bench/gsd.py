"""How each bundle holds up when the scene's ground sample distance is not the model's.

The 14 validation images of ``aircraft_lsn`` (Pléiades, 0.5 m, never trained on) are resampled
to each ``--gsds`` value — averaged down when coarser, interpolated (bilinear) up when finer —
and written as GeoTIFFs whose CRS says that GSD, their labels scaled with them; each bundle
then detects in them with its default options (once per ``--zoom`` mode) and is scored together
over the 14 (COCO AP50 and AP50:95, score threshold 0.05).

    python bench/gsd.py --images ../shared/data/aircraft/train \\
        --labels ../shared/data/aircraft/annotations.csv --out bench/results/gsd.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
import warnings
from pathlib import Path
from typing import Any

from geo_hires.detect.options import ZOOM_CHOICES, DetectOptions
from geo_hires.errors import NoCRSWarning
from geo_hires.evaluate import evaluate_images
from geo_hires.evaluate.scenes import labelled_scene
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import load_card
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene
from geo_hires.train.gsd import at_gsd, scaled_truth

NATIVE_GSD = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--gsds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--bundles", nargs="+",
                    default=["aircraft_lsn", "aircraft_yolo", "aircraft_cascade"])  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path("/tmp/geo-hires-gsd"))
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--zoom", nargs="+", default=["auto"], choices=ZOOM_CHOICES,
                    help="zoom modes to run each bundle with (one row per mode)")  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    warnings.simplefilter("ignore", NoCRSWarning)
    names = load_card("aircraft_lsn").val_images
    results: dict[str, Any] = {"images": len(names), "gsds": args.gsds, "zoom": args.zoom,
                               "bundles": {}}  # fmt: skip
    bundles = {n: load_bundle(n) for n in args.bundles}
    for gsd in args.gsds:
        folder = args.work / f"{gsd:g}m"
        folder.mkdir(parents=True, exist_ok=True)
        scenes = []
        for name in names:
            src = str(Path(args.images) / name)
            out = folder / f"{Path(name).stem}.tif"
            factor = at_gsd(src, gsd, out, native=NATIVE_GSD)
            _, truth = labelled_scene(src, args.labels, bundles[args.bundles[0]].card)
            scenes.append((open_scene(out), scaled_truth(truth, factor)))
        for (bname, bundle), zoom in itertools.product(bundles.items(), args.zoom):
            options = DetectOptions(model=bname, precision=args.precision, zoom=zoom)
            cfg = dataclasses.replace(options.detect_config(bundle.card), score_threshold=0.05)
            pairs, seconds = [], 0.0
            for scene, truth in scenes:
                start = time.perf_counter()
                r = detect_scene(scene, bundle, cfg)
                seconds += time.perf_counter() - start
                pairs.append((r.detections, truth))
            res = evaluate_images(pairs).overall
            row = {"ap50": round(res.ap50, 4), "ap50_95": round(res.ap50_95, 4),
                   "seconds": round(seconds, 1), "precision": cfg.precision,
                   "zoom": cfg.zoom.mode,
                   "levels": [(lv.name, lv.downsample) for lv in r.levels]}  # fmt: skip
            key = bname if args.zoom == ["auto"] else f"{bname} --zoom {zoom}"
            results["bundles"].setdefault(key, {})[f"{gsd:g}"] = row
            print(f"{gsd:g} m  {key:<18} AP50 {row['ap50']:.3f}  AP50:95 {row['ap50_95']:.3f}",
                  flush=True)  # fmt: skip
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
