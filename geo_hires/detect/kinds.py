"""The three kinds of level a unit can belong to, each turning a batch of blocks into boxes.

* :class:`ScanLevel` — the bundle's scanning network over blocks that share their overlap;
  decodes heatmap peaks, keeps those in the level's size range (and, on a zoomed run's coarse
  level, leaves every peak as zoom evidence);
* :class:`WindowLevel` — an ultralytics model over windows whose cores tile the level; each
  window reports the boxes centred in its core;
* :class:`RefineLevel` — a cascade's refiner over windows around the scanner's candidates.

:func:`level_kinds` builds one per level of a card, once per runner; every unit of a level is
then computed by the same object, whatever executor runs it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import torch

from geo_hires.detect.blocks import Block
from geo_hires.detect.cascade import drop_truncated
from geo_hires.detect.forward import BlockOutput, Item, forward_batch, prepare
from geo_hires.detect.levels import LevelScale
from geo_hires.detect.options import DetectConfig, Precision
from geo_hires.detect.zoom import EVIDENCE_COLUMNS
from geo_hires.detections import PixelDetections
from geo_hires.models.card import FCN, TRUNCATED_PX, Level
from geo_hires.models.codec import decode_peaks

if TYPE_CHECKING:
    from geo_hires.models.bundle import Bundle
    from geo_hires.models.fcn import FCNDetector
    from geo_hires.models.yolo import Prediction, YoloModel

__all__ = [
    "Computed",
    "LevelKind",
    "Parts",
    "RefineLevel",
    "ScanLevel",
    "WindowLevel",
    "level_kinds",
]

Parts = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64] | None,
]
"""One block's boxes ``(N, 4)`` (level-0 xyxy), scores, classes, and oriented corners."""
Evidence = npt.NDArray[np.float64]


Computed = tuple[list["Parts"], "Evidence | None", dict[str, float]]
"""A unit's parts, its zoom evidence (or ``None``) and the seconds of ``forward``/``decode``."""


class LevelKind(Protocol):
    """Computes one unit's blocks: their parts, the zoom evidence, where the time went."""

    def compute(self, items: list[Item], d: float) -> Computed: ...


def _valid_at(
    valid: npt.NDArray[np.bool_],
    block: Block,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_]:
    """Whether the level pixels at ``x, y`` (level coordinates, e.g. box centres) are valid in
    ``block``'s validity mask (positions clipped to the block)."""
    vx = np.clip(x.astype(int) - block.x0, 0, valid.shape[1] - 1)
    vy = np.clip(y.astype(int) - block.y0, 0, valid.shape[0] - 1)
    return valid[vy, vx]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ScanLevel:
    """A level run by the scanning network.

    ``threshold`` is the run's score threshold (a cascade's gate: the scanner proposes, the
    refiner decides); ``evidence_threshold`` is set on a zoomed run's coarse level only.
    """

    net: FCNDetector
    rule: Level
    threshold: float
    max_peaks: int
    device: torch.device
    precision: Precision = "fp32"
    evidence_threshold: float | None = None

    def compute(self, items: list[Item], d: float) -> Computed:
        start = time.perf_counter()
        outs = forward_batch(self.net, items, self.device, self.precision)
        mid = time.perf_counter()
        parts = [self._decode(o, d) for o in outs]
        evidence = None
        if self.evidence_threshold is not None:
            found = [self._evidence(o, d, self.evidence_threshold) for o in outs]
            evidence = np.concatenate(found or [np.zeros((0, EVIDENCE_COLUMNS))])
        return parts, evidence, {"forward": mid - start, "decode": time.perf_counter() - mid}

    def _peaks(
        self, o: BlockOutput, threshold: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        return decode_peaks(
            o.out, num_classes=self.net.spec.num_classes, stride=self.net.stride,
            origin=o.origin, keep=o.keep, threshold=threshold, max_peaks=self.max_peaks,
        )  # fmt: skip

    def _decode(self, o: BlockOutput, d: float) -> Parts:
        boxes, scores, classes = self._peaks(o, self.threshold)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rule = self.rule
        ok = (side >= rule.min_size) & (side < rule.max_size) & _valid_at(o.valid, o.block, cx, cy)
        return boxes[ok] * d, scores[ok], classes[ok], None

    def _evidence(self, o: BlockOutput, d: float, threshold: float) -> Evidence:
        """Peaks above the evidence threshold, any size, on valid pixels: ``(M, 5)`` level-0
        centre ``x, y``, score, width, height (what a zoom decision sees)."""
        boxes, scores, _ = self._peaks(o, threshold)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        ok = _valid_at(o.valid, o.block, cx, cy)
        w, h = (boxes[:, 2] - boxes[:, 0]) * d, (boxes[:, 3] - boxes[:, 1]) * d
        cols = (cx[ok] * d, cy[ok] * d, scores[ok], w[ok], h[ok])
        return np.stack(cols, axis=1).reshape(-1, EVIDENCE_COLUMNS)


def _predict(
    model: YoloModel, items: list[Item], *, imgsz: int, threshold: float, threads: int, device: str
) -> list[tuple[Item, Prediction]]:
    """The ultralytics model's boxes per block with valid pixels (block frame)."""
    items = [it for it in items if it[2].any()]
    if not items:
        return []
    images = [
        np.round(np.clip(im, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)
        for _, im, _ in items
    ]
    preds = model.predict(images, imgsz=imgsz, threshold=threshold, threads=threads, device=device)
    return list(zip(items, preds, strict=True))


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class WindowLevel:
    """A level run by an ultralytics model: each window keeps the boxes centred in its core
    (and on valid pixels, within the level's size range), so overlapping windows report each
    object once."""

    model: YoloModel
    rule: Level
    threshold: float
    threads: int
    device: torch.device

    def compute(self, items: list[Item], d: float) -> Computed:
        parts = []
        start = time.perf_counter()
        found = _predict(self.model, items, imgsz=self.rule.window, threshold=self.threshold,
                         threads=self.threads, device=str(self.device))  # fmt: skip
        mid = time.perf_counter()
        for (b, _, valid), (boxes, scores, classes, corners) in found:
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            gx = (boxes[:, 0] + boxes[:, 2]) / 2 + b.x0
            gy = (boxes[:, 1] + boxes[:, 3]) / 2 + b.y0
            ok = (gx >= b.cx0) & (gx < b.cx1) & (gy >= b.cy0) & (gy < b.cy1)
            ok &= _valid_at(valid, b, gx, gy)
            ok &= (side >= self.rule.min_size) & (side < self.rule.max_size)
            shifted = boxes[ok] + np.array([b.x0, b.y0, b.x0, b.y0], np.float64)
            moved = None if corners is None else (corners[ok] + np.array([b.x0, b.y0])) * d
            parts.append((shifted * d, scores[ok], classes[ok], moved))
        return parts, None, {"forward": mid - start, "decode": time.perf_counter() - mid}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class RefineLevel:
    """A cascade's refiner on windows around candidates, read at the refiner's GSD: boxes cut
    by a window edge inside the scene are dropped; the window around their own candidate sees
    them whole."""

    model: YoloModel
    window: int
    threshold: float
    threads: int
    device: torch.device
    class_names: tuple[str, ...]
    scene_size: tuple[int, int]

    def compute(self, items: list[Item], d: float) -> Computed:
        parts: list[Parts] = []
        start = time.perf_counter()
        found = _predict(self.model, items, imgsz=self.window, threshold=self.threshold,
                         threads=self.threads, device=str(self.device))  # fmt: skip
        mid = time.perf_counter()
        level = (math.ceil(self.scene_size[0] / d), math.ceil(self.scene_size[1] / d))
        for (b, _, _), (boxes, scores, classes, corners) in found:
            dets = PixelDetections.build(boxes, scores, classes, class_names=self.class_names)
            dets = dataclasses.replace(dets, corners=corners).shifted(b.x0, b.y0)
            window = (b.x0, b.y0, b.x1, b.y1)
            kept = drop_truncated(dets, window, scene_size=level, margin=TRUNCATED_PX)
            moved = None if kept.corners is None else kept.corners * d
            parts.append((kept.boxes * d, kept.scores, kept.classes, moved))
        return parts, None, {"forward": mid - start, "decode": time.perf_counter() - mid}


def level_kinds(
    bundle: Bundle,
    cfg: DetectConfig,
    scales: tuple[LevelScale, ...],
    *,
    device: torch.device,
    scene_size: tuple[int, int],
    evidence_level: int | None,
) -> Mapping[int, LevelKind]:
    """One computing object per level a run scans (``scales``: their rules, size ranges
    widened where levels were folded) and the refiner at ``len(card.levels)``."""
    card = bundle.card
    thr = cfg.score_threshold or card.score_threshold
    scan_thr = card.cascade.gate_threshold if card.cascade is not None else thr  # proposals
    kinds: dict[int, LevelKind] = {}
    net = prepare(bundle.fcn, device)[0] if bundle.fcn is not None else None
    for scale in scales:
        li, rule = scale.index, scale.rule
        if rule.detector != FCN:
            kinds[li] = WindowLevel(
                model=bundle.model(rule.detector), rule=rule, threshold=scan_thr,
                threads=cfg.threads, device=device,
            )  # fmt: skip
            continue
        evidence = cfg.zoom.evidence_threshold if li == evidence_level else None
        kinds[li] = ScanLevel(
            net=net if net is not None else bundle.network(), rule=rule, threshold=scan_thr,
            max_peaks=cfg.max_per_block, device=device, precision=cfg.precision,
            evidence_threshold=evidence,
        )  # fmt: skip
    if card.cascade is not None:
        kinds[len(card.levels)] = RefineLevel(
            model=bundle.model(card.cascade.detector), window=card.cascade.window,
            threshold=thr, threads=cfg.threads, device=device, class_names=card.classes,
            scene_size=scene_size,
        )  # fmt: skip
    return kinds
