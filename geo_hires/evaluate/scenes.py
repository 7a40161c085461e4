"""Score a model bundle by detecting on labelled scenes through the real pipeline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from geo_hires.config import ReadConfig
from geo_hires.detect.options import DetectConfig, Precision
from geo_hires.detections import PixelDetections
from geo_hires.errors import NoCRSWarning, quiet
from geo_hires.evaluate.coco import evaluate_images
from geo_hires.labels import labels_for
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import ModelCard
from geo_hires.pipeline import detect_scene
from geo_hires.scene import Scene, open_scene

__all__ = ["evaluate_scenes", "labelled_scene"]


def labelled_scene(
    path: str,
    labels: str,
    card: ModelCard,
    *,
    read_config: ReadConfig | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[Scene, PixelDetections]:
    """A labelled scene and its truth in level-0 pixels, classes renamed by the card's
    training ``class_map`` (a scene without a CRS is fine: labels are in its pixels)."""
    with quiet(NoCRSWarning):
        scene = open_scene(path, config=read_config)
    class_map = card.extra.get("training", {}).get("class_map", {})
    return scene, labels_for(path, labels).renamed(class_map).to_pixels(scene, class_names)


def evaluate_scenes(
    bundle: str,
    scenes: Sequence[str],
    labels: str,
    *,
    score_threshold: float = 0.05,
    read_config: ReadConfig | None = None,
    precision: Precision = "fp32",
) -> dict[str, Any]:
    """Detect on each scene and score all of them together (COCO, one image per scene).

    The truth's classes are renamed with the bundle card's training ``class_map``. A low score
    threshold is used so AP sees the whole precision-recall curve; ``precision`` is the
    scanning network's arithmetic, recorded as ``arithmetic`` (``precision`` is the score's).
    """
    model = load_bundle(bundle)
    card = model.card
    cfg = DetectConfig(score_threshold=score_threshold, precision=precision)
    pairs, seconds, mp = [], 0.0, 0.0
    for path in scenes:
        scene, truth = labelled_scene(path, labels, card, read_config=read_config)
        start = time.perf_counter()
        result = detect_scene(scene, model, cfg, read_config=read_config)
        seconds += time.perf_counter() - start
        mp += scene.pixels / 1e6
        pairs.append((result.detections, truth))
    res = evaluate_images(pairs)
    out = res.as_json()
    out.update(
        {
            "images": len(pairs),
            "score_threshold": score_threshold,
            "arithmetic": precision,
            "megapixels_per_s": round(mp / max(seconds, 1e-9), 2),
        }
    )
    return out
