"""Measure a bundle's validation AP in each precision and record in its card whether bf16
keeps it (what ``--precision auto`` reads).

Scores the bundle on the validation images its own card names, once in fp32 and once in bf16
(the scanning network's arithmetic; ultralytics models run fp32 either way), and writes
``precision`` into ``card.json``: both measurements, the tolerance, and ``bf16.keeps_ap`` — true
when neither AP50 nor AP50:95 drops by more than the tolerance. A bundle without a scanning
network is left alone (bf16 does not apply).

    python scripts/score_precision.py geo_hires/models/weights/aircraft_lsn \\
        ../shared/data/aircraft/train ../shared/data/aircraft/annotations.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geo_hires.evaluate import evaluate_scenes
from geo_hires.models.card import load_card, update_card

TOLERANCE = 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("images")
    ap.add_argument("labels")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = ap.parse_args()
    card = load_card(args.bundle)
    if card.arch is None:
        print(f"{args.bundle}: no scanning network; bf16 does not apply")
        return
    scenes = [str(Path(args.images) / n) for n in card.val_images]
    rows = {}
    for precision in ("fp32", "bf16"):
        m = evaluate_scenes(args.bundle, scenes, args.labels, precision=precision)
        rows[precision] = {k: round(m[k], 4) for k in ("ap50", "ap50_95", "megapixels_per_s")}
    drop = max(rows["fp32"][k] - rows["bf16"][k] for k in ("ap50", "ap50_95"))
    rows["bf16"]["keeps_ap"] = bool(drop <= args.tolerance)
    record = {
        **rows,
        "tolerance": args.tolerance,
        "images": len(scenes),
        "measured": time.strftime("%Y-%m-%d") + " by scripts/score_precision.py",
    }
    update_card(args.bundle, {"precision": record})
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
