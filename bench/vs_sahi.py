"""geo_hires block scan vs SAHI sliced inference of the *same* network.

Our LSN is wrapped as a SAHI ``DetectionModel`` (forward on each slice, CenterNet peaks decoded
over the whole slice); SAHI slices with the same size and overlap as our YOLT windows and merges
with class-aware NMS at IoU 0.5, as our merge does. Both run one level (full resolution, no size
filter) so the comparison is slicing vs shared-overlap scanning and nothing else; our two-level
pipeline's AP50 is reported beside them. Needs ``pip install sahi`` (bench environment only).

    python bench/vs_sahi.py --val-from geo_hires/models/weights/aircraft_lsn/card.json \\
        --images ../shared/data/aircraft/train --labels ../shared/data/aircraft/annotations.csv \\
        --synthetic /tmp/synth100.tif
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from sahi.models.base import DetectionModel
from sahi.predict import get_sliced_prediction
from sahi.prediction import ObjectPrediction

from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.options import DetectConfig
from geo_hires.detections import PixelDetections
from geo_hires.errors import NoCRSWarning
from geo_hires.evaluate import evaluate_images
from geo_hires.labels import read_labels
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import Level
from geo_hires.models.codec import decode_peaks
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene


class GeoHiresSahiModel(DetectionModel):
    """Our folded FCN as a SAHI detection model (uint8 RGB slices, /255 as our reader does)."""

    def set_model(self, model: Any, **kwargs: Any) -> None:
        self.model = model.eval()
        self.category_mapping = {str(i): n for i, n in enumerate(kwargs.get("classes", ["object"]))}

    def load_model(self) -> None:  # the model is always handed over with set_model
        raise NotImplementedError

    def perform_inference(self, image: np.ndarray) -> None:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)[None]
        with torch.inference_mode():
            y = self.model(x.contiguous(memory_format=torch.channels_last))[0]
        h, w = y.shape[1:]
        self._original_predictions = decode_peaks(
            y,
            num_classes=self.model.spec.num_classes,
            stride=self.model.stride,
            origin=(0, 0),
            keep=(0, h, 0, w),
            threshold=self.confidence_threshold,
        )

    def _create_object_prediction_list_from_original_predictions(
        self, shift_amount_list=None, full_shape_list=None
    ):
        boxes, scores, classes = self._original_predictions
        shift = shift_amount_list[0] if shift_amount_list else [0, 0]
        if shift and isinstance(shift[0], list):
            shift = shift[0]
        full = full_shape_list[0] if full_shape_list else None
        if full and isinstance(full[0], list):
            full = full[0]
        preds = []
        for b, s, c in zip(boxes, scores, classes, strict=True):
            b = np.clip(b, 0, None)
            if b[2] - b[0] < 1 or b[3] - b[1] < 1:
                continue
            preds.append(
                ObjectPrediction(
                    bbox=b.tolist(),
                    category_id=int(c),
                    category_name=(self.category_mapping or {})[str(int(c))],
                    shift_amount=shift,
                    score=float(s),
                    full_shape=full,
                )
            )
        self._object_prediction_list_per_image = [preds]


def _sahi(
    sahi_model, path: str, slice_px: int, overlap: float, classes
) -> tuple[PixelDetections, float]:
    """SAHI on a file; the time includes reading the image, as ours includes its reads."""
    start = time.perf_counter()
    image = _read_rgb(path)
    res = get_sliced_prediction(
        image,
        sahi_model,
        slice_height=slice_px,
        slice_width=slice_px,
        overlap_height_ratio=overlap,
        overlap_width_ratio=overlap,
        perform_standard_pred=False,
        postprocess_type="NMS",
        postprocess_match_metric="IOU",
        postprocess_match_threshold=0.5,
        verbose=0,
    )
    secs = time.perf_counter() - start
    ops = res.object_prediction_list
    boxes = [p.bbox.to_xyxy() for p in ops]
    return PixelDetections.build(
        boxes, [p.score.value for p in ops], [p.category.id for p in ops], class_names=classes
    ), secs


def _read_rgb(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read([1, 2, 3]).transpose(1, 2, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="aircraft_lsn")
    ap.add_argument("--val-from", required=True, help="card.json whose validation images to use")
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--synthetic", help="a large synthetic scene for the speed comparison")
    ap.add_argument("--slice", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--threshold", type=float, default=0.05)
    args = ap.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore", NoCRSWarning)
    bundle = load_bundle(args.model)
    card = bundle.card
    model = bundle.network().to(memory_format=torch.channels_last)
    one_level = dataclasses.replace(
        card, levels=(Level(name="full", target_gsd_m=card.gsd_m, downsample=1),)
    )
    sahi_model = GeoHiresSahiModel(
        model=model, confidence_threshold=args.threshold, device="cpu", load_at_init=False
    )
    sahi_model.set_model(model, classes=card.classes)
    cfg = DetectConfig(score_threshold=args.threshold, batch_size=1)
    class_map = card.extra["training"]["class_map"]
    val = json.loads(Path(args.val_from).read_text())["training"]["val_images"]
    rows: dict[str, list] = {"sahi": [], "ours_1level": [], "ours_2level": []}
    times = {k: 0.0 for k in rows}
    mp = 0.0
    first = str(Path(args.images) / val[0])  # both warm (the process's first forward, the
    _sahi(sahi_model, first, args.slice, args.overlap, card.classes)  # page cache) untimed
    detect_scene(open_scene(first), bundle, cfg, executor=LocalExecutor(device=torch.device("cpu")))
    for name in val:
        path = str(Path(args.images) / name)
        scene = open_scene(path)
        lab = read_labels(args.labels, image=name)
        truth = dataclasses.replace(
            lab, names=tuple(class_map.get(n, n) for n in lab.names)
        ).to_pixels(scene)
        dets, secs = _sahi(sahi_model, path, args.slice, args.overlap, card.classes)
        rows["sahi"].append((dets, truth))
        times["sahi"] += secs
        for key, c in (("ours_1level", one_level), ("ours_2level", card)):
            r = detect_scene(scene, dataclasses.replace(bundle, card=c), cfg,
                             executor=LocalExecutor(device=torch.device("cpu")))  # fmt: skip
            rows[key].append((r.detections, truth))
            times[key] += r.seconds
        mp += scene.pixels / 1e6
    out: dict[str, Any] = {
        "val_images": len(val),
        "megapixels": round(mp, 1),
        "slice": args.slice,
        "overlap": args.overlap,
    }
    for key, pairs in rows.items():
        res = evaluate_images(pairs)
        out[key] = {
            "ap50": round(res.overall.ap50, 4),
            "seconds": round(times[key], 2),
            "mp_per_s": round(mp / times[key], 2),
        }
    out["speedup_1level_vs_sahi"] = round(times["sahi"] / times["ours_1level"], 2)
    if args.synthetic:
        scene = open_scene(args.synthetic)
        _, s_secs = _sahi(sahi_model, args.synthetic, args.slice, args.overlap, card.classes)
        r = detect_scene(scene, dataclasses.replace(bundle, card=one_level), cfg,
                         executor=LocalExecutor(device=torch.device("cpu")))  # fmt: skip
        out["synthetic"] = {
            "megapixels": round(scene.pixels / 1e6, 1),
            "sahi_s": round(s_secs, 1),
            "ours_1level_s": round(r.seconds, 1),
            "speedup": round(s_secs / r.seconds, 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
