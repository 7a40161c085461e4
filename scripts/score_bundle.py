"""Re-measure a bundle's validation metrics with the current pipeline and update its card.

Scores the bundle on the validation images named in its own card (never trained on), exactly as
``geo-hires train`` does at the end of training, and rewrites ``metrics`` in ``card.json``.

    python scripts/score_bundle.py geo_hires/models/weights/aircraft_lsn \\
        ../shared/data/aircraft/train ../shared/data/aircraft/annotations.csv
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from geo_hires.evaluate import evaluate_scenes
from geo_hires.models.card import load_card, update_card


def main(bundle: str, images: str, labels: str) -> None:
    scenes = [str(Path(images) / n) for n in load_card(bundle).val_images]
    metrics = evaluate_scenes(bundle, scenes, labels)
    metrics["measured"] = time.strftime("%Y-%m-%d") + " by scripts/score_bundle.py"
    update_card(bundle, {"metrics": metrics})
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_class"}, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
