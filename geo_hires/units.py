"""Work units: the deterministic plan every executor runs, and the code that runs one unit.

A unit is a batch of same-shape blocks of one level. Planning is a pure function of the scene,
the model and the config, so a local run, a Ray run and a resumed run all cut the same units
with the same keys, and :class:`UnitRunner` turns each into the same bytes wherever it runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window

from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.journal import UnitResult
from geo_hires.merge import drop_truncated
from geo_hires.models.bundle import Detectors
from geo_hires.models.codec import decode_peaks
from geo_hires.models.fcn import FCNDetector
from geo_hires.models.registry import FCN, LevelRule, ModelCard
from geo_hires.models.yolo import Prediction
from geo_hires.scan import (
    Block,
    BlockOutput,
    batch_blocks,
    default_device,
    forward_batch,
    halo_for,
    plan_blocks,
    prepare,
)
from geo_hires.scene import Scene, SceneReader
from geo_hires.tiling.plan import Tile
from geo_hires.zoom import EVIDENCE_COLUMNS, ZoomConfig

__all__ = [
    "DetectConfig",
    "Item",
    "LevelRun",
    "Unit",
    "UnitRunner",
    "coarsest",
    "level_downsample",
    "level_names",
    "plan_units",
]

REFINE = "refine"
"""Level name of a cascade's refiner detections (level index ``len(card.levels)``)."""
WINDOW_STRIDE = 16
"""Grid of ultralytics windows (core and halo are multiples of it)."""
Parts = Prediction
Select = Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.bool_]]
"""Chooses a fine level's windows: (level index, ``(N, 4)`` level-0 cores) → mask."""

Item = tuple[Block, npt.NDArray[np.float32], npt.NDArray[np.bool_]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """Detection settings.

    Attributes:
        core: Block core side in level pixels (a multiple of the network stride). Larger blocks
            waste less on halos but hold more memory: a block is ``(core + 2 * halo)^2`` pixels.
        batch_size: Blocks per forward pass (one work unit).
        score_threshold: Minimum heatmap score; ``None`` uses the model card's.
        iou_threshold: Class-aware NMS across levels.
        prefetch: Units read ahead on a background thread (local executor).
        max_per_block: Cap on peaks decoded per block.
        whole_read_pixels: A level of at most this many pixels is read once and sliced into
            blocks (files without internal tiling, like plain JPEG or PNG, would otherwise be
            decoded again for every block); larger levels stream block by block. The budget
            bounds what is held: 13 bytes per pixel (image and mask).
        threads: Torch intra-op threads for the forward pass, in every executor. Part of the
            numerics: CPU convolutions split their sums by thread, so the same thread count is
            what makes local and Ray runs byte-identical.
        levels: Names of the model card's levels to run (``None``: all). Unit keys keep the
            card's level indices, and the config identity covers this, so a journal of a run
            with other levels is never reused.
        zoom: Which fine windows get the full-resolution pass (:mod:`geo_hires.zoom`).
    """

    core: int = 1024
    batch_size: int = 2
    score_threshold: float | None = None
    iou_threshold: float = 0.5
    prefetch: int = 2
    max_per_block: int = 5000
    whole_read_pixels: int = 16_000_000
    threads: int = 2
    levels: tuple[str, ...] | None = None
    zoom: ZoomConfig = dataclasses.field(default_factory=ZoomConfig)

    def __post_init__(self) -> None:
        if self.core < 16 or self.batch_size < 1 or self.prefetch < 1:
            raise ConfigError(
                "DetectConfig: core >= 16, batch_size >= 1 and prefetch >= 1 required"
            )
        if self.score_threshold is not None and not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score threshold must be in (0, 1), got {self.score_threshold}")
        if self.levels is not None and not self.levels:
            raise ConfigError("levels: name at least one level of the model card")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unit:
    """A work unit: same-shape blocks of one level, run as one batch.

    Attributes:
        key: ``L{level}-U{index}``, stable for a given scene, model and config.
        level: Level index in the model card.
        downsample: Level-0 pixels per level pixel.
        blocks: The blocks (level pixels).
    """

    key: str
    level: int
    downsample: int
    blocks: tuple[Block, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelRun:
    """One level as planned: its downsample factor, block counts, level-0 pixels of the
    block cores (all, and those scanned: not left out for nodata or the AOI), and the scanned
    cores themselves (level-0 ``x0, y0, x1, y1``: the coverage). ``windows``: for a zoomed fine
    level, the windows it could have scanned (those scanned are ``cores``)."""

    name: str
    downsample: int
    blocks: int
    skipped_nodata: int
    skipped_aoi: int = 0
    pixels: int = 0
    pixels_scanned: int = 0
    cores: tuple[tuple[int, int, int, int], ...] = ()
    windows: int | None = None


def level_downsample(rule: LevelRule, scene: Scene, card: ModelCard) -> int:
    """Downsample of a level for ``scene``: from ground size when the GSD is known.

    Without a GSD (no CRS) the scene is assumed to be at the model's training GSD.
    """
    if scene.gsd_m:
        return max(1, round(rule.target_gsd_m / scene.gsd_m))
    return max(1, round(rule.target_gsd_m / card.gsd_m)) if card.gsd_m else rule.downsample


def level_names(card: ModelCard) -> tuple[str, ...]:
    """The card's level names, and ``refine`` after them when it has a cascade."""
    return tuple(r.name for r in card.levels) + ((REFINE,) if card.cascade else ())


def coarsest(card: ModelCard, scene: Scene, cfg: DetectConfig) -> int:
    """Index of the run's coarsest level (largest downsample; the first of equals): the one a
    zoomed run always scans."""
    run = [i for i, r in enumerate(card.levels) if cfg.levels is None or r.name in cfg.levels]
    return max(run, key=lambda i: (level_downsample(card.levels[i], scene, card), -i))


def _level_blocks(
    rule: LevelRule, model: Detectors, size: tuple[int, int], core: int
) -> tuple[Block, ...]:
    """Blocks of a scanning level (halo from the receptive field) or an ultralytics level
    (windows of ``rule.window`` whose cores tile the level, ``rule.halo`` of overlap)."""
    if rule.detector == FCN:
        net = model.network()
        halo = halo_for(net.receptive_field, net.stride)
        return plan_blocks(*size, core=core, halo=halo, stride=net.stride)
    core = rule.window - 2 * rule.halo
    return plan_blocks(*size, core=core, halo=rule.halo, stride=WINDOW_STRIDE)


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


def _corners(parts: list[Parts]) -> npt.NDArray[np.float64] | None:
    """Oriented corners of a unit's parts (an OBB detector's), or ``None``."""
    found = [p[3] for p in parts if p[3] is not None]
    return np.concatenate(found).reshape(-1, 4, 2) if found else None


def _level0(block: Block, d: int) -> Window:
    return Window(block.x0 * d, block.y0 * d, (block.x1 - block.x0) * d, (block.y1 - block.y0) * d)


def _core0(block: Block, d: int, scene: Scene) -> Window:
    """The block's core in level-0 pixels, clipped to the scene."""
    x0, y0 = block.cx0 * d, block.cy0 * d
    x1, y1 = min(block.cx1 * d, scene.width), min(block.cy1 * d, scene.height)
    return Window(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _level_size(scene: Scene, d: int) -> tuple[int, int]:
    return math.ceil(scene.width / d), math.ceil(scene.height / d)


def plan_units(
    scene: Scene,
    model: FCNDetector | Detectors,
    card: ModelCard,
    cfg: DetectConfig,
    *,
    has_data: Callable[[Window], bool] | None = None,
    in_aoi: Callable[[Window], bool] | None = None,
    only: Sequence[int] | None = None,
    select: Select | None = None,
) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
    """Every level's blocks, batched into keyed units; left out: blocks whose core misses the
    AOI (``in_aoi`` on the core's level-0 window), then nodata-only blocks (``has_data``).

    A zoomed run plans in two stages: the coarsest level alone (``only``), then the fine levels
    (``only``), whose windows (``cfg.zoom.window`` cores) ``select`` chooses from, given the
    level index and the windows' level-0 cores.
    """
    units: list[Unit] = []
    runs = []
    detectors = Detectors.of(model)
    names = [r.name for r in card.levels]
    unknown = sorted(set(cfg.levels or ()) - set(names))
    if unknown:
        raise ConfigError(f"model {card.name!r} has no level {unknown[0]!r}; its levels: {names}")
    zoomed = cfg.zoom.selective and select is not None
    for li, rule in enumerate(card.levels):
        if cfg.levels is not None and rule.name not in cfg.levels:
            continue
        if only is not None and li not in only:
            continue
        d = level_downsample(rule, scene, card)
        core = cfg.zoom.window if zoomed else cfg.core
        blocks = _level_blocks(rule, detectors, _level_size(scene, d), core)
        aimed = [b for b in blocks if in_aoi is None or in_aoi(_core0(b, d, scene))]
        kept = [b for b in aimed if has_data is None or has_data(_level0(b, d))]
        windows, nodata = len(kept), len(aimed) - len(kept)
        if zoomed and select is not None:
            boxes = np.array([_xyxy(_core0(b, d, scene)) for b in kept], float).reshape(-1, 4)
            kept = [b for b, ok in zip(kept, select(li, boxes), strict=True) if ok]
        cores = [_core0(b, d, scene) for b in kept]
        for k, batch in enumerate(batch_blocks(kept, cfg.batch_size)):
            units.append(Unit(key=f"L{li}-U{k}", level=li, downsample=d, blocks=batch))
        runs.append(
            LevelRun(
                name=rule.name,
                downsample=d,
                blocks=len(blocks),
                skipped_nodata=nodata,
                skipped_aoi=len(blocks) - len(aimed),
                pixels=scene.pixels,
                pixels_scanned=sum(w.width * w.height for w in cores),
                cores=tuple(_xyxy(w) for w in cores),
                windows=windows if zoomed else None,
            )
        )
    return tuple(units), tuple(runs)


def _xyxy(w: Window) -> tuple[int, int, int, int]:
    return (int(w.col_off), int(w.row_off), int(w.col_off + w.width), int(w.row_off + w.height))


class UnitRunner:
    """Reads and computes units of one scene with one model (used by every executor).

    Small levels (see ``DetectConfig.whole_read_pixels``) are read once and cached.
    """

    def __init__(
        self,
        reader: SceneReader,
        model: FCNDetector | Detectors,
        card: ModelCard,
        cfg: DetectConfig,
        device: torch.device | None = None,
    ) -> None:
        self.reader, self.card, self.cfg = reader, card, cfg
        self.detectors = Detectors.of(model)
        self.device = device or default_device()
        self.model = (
            prepare(self.detectors.fcn, self.device)[0] if self.detectors.fcn is not None else None
        )
        self._whole: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = {}
        self._coarse = coarsest(card, reader.scene, cfg) if cfg.zoom.selective else -1

    def read(self, unit: Unit) -> list[Item]:
        """Inputs of each block of ``unit``: (block, image, valid)."""
        d = unit.downsample
        lw, lh = _level_size(self.reader.scene, d)
        if lw * lh <= self.cfg.whole_read_pixels:
            if d not in self._whole:
                w = self.reader.read(Window(0, 0, lw * d, lh * d), out_size=(lh, lw))
                self._whole[d] = (w.image, w.valid)
            img, ok = self._whole[d]
            return [
                (b, img[:, b.y0 : b.y1, b.x0 : b.x1], ok[b.y0 : b.y1, b.x0 : b.x1])
                for b in unit.blocks
            ]
        items = []
        for b in unit.blocks:
            w = self.reader.read(_level0(b, d), out_size=b.shape)
            items.append((b, w.image, w.valid))
        return items

    def compute(self, unit: Unit, items: list[Item]) -> UnitResult:
        """Run the unit's detector on its batch; its blocks' boxes in level-0 pixels."""
        thr = self.cfg.score_threshold or self.card.score_threshold
        evidence = None
        if unit.level == len(self.card.levels) and self.card.cascade is not None:
            parts = self._refine(items, self.card.cascade.detector, thr)
        elif self.card.levels[unit.level].detector != FCN:
            parts = self._windows(items, self.card.levels[unit.level], unit.downsample, thr)
        else:
            rule = self.card.levels[unit.level]
            if self.card.cascade is not None:  # the scanner proposes; the refiner decides
                thr = self.card.cascade.gate_threshold
            net = self.detectors.network() if self.model is None else self.model
            outs = forward_batch(net, items, self.device)
            parts = [self._decode(o, rule, unit.downsample, thr) for o in outs]
            if self.cfg.zoom.selective and unit.level == self._coarse:
                evidence = np.concatenate(
                    [self._evidence(o, unit.downsample) for o in outs]
                    or [np.zeros((0, EVIDENCE_COLUMNS))]
                )
        return UnitResult(
            key=unit.key,
            level=unit.level,
            boxes=np.concatenate([p[0] for p in parts]).reshape(-1, 4)
            if parts
            else np.zeros((0, 4)),
            scores=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
            classes=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64),
            corners=_corners(parts),
            evidence=evidence,
        )

    def run(self, unit: Unit) -> UnitResult:
        return self.compute(unit, self.read(unit))

    def _predict(
        self, items: list[Item], detector: str, imgsz: int, threshold: float
    ) -> list[tuple[Item, Parts]]:
        """The ultralytics model's boxes per block with valid pixels (block frame)."""
        items = [it for it in items if it[2].any()]
        if not items:
            return []
        images = [
            np.round(np.clip(im, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)
            for _, im, _ in items
        ]
        model = self.detectors.model(detector)
        preds = model.predict(
            images,
            imgsz=imgsz,
            threshold=threshold,
            threads=self.cfg.threads,
            device=str(self.device),
        )
        return list(zip(items, preds, strict=True))

    def _windows(self, items: list[Item], rule: LevelRule, d: int, threshold: float) -> list[Parts]:
        """An ultralytics level: each window keeps the boxes centred in its core (and on
        valid pixels, within the level's size range), so overlapping windows report each
        object once."""
        parts = []
        for (b, _, valid), (boxes, scores, classes, corners) in self._predict(
            items, rule.detector, rule.window, threshold
        ):
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            gx = (boxes[:, 0] + boxes[:, 2]) / 2 + b.x0
            gy = (boxes[:, 1] + boxes[:, 3]) / 2 + b.y0
            ok = (gx >= b.cx0) & (gx < b.cx1) & (gy >= b.cy0) & (gy < b.cy1)
            ok &= _valid_at(valid, b, gx, gy)
            ok &= (side >= rule.min_size) & (side < rule.max_size)
            shifted = boxes[ok] + np.array([b.x0, b.y0, b.x0, b.y0], np.float64)
            moved = None if corners is None else (corners[ok] + np.array([b.x0, b.y0])) * d
            parts.append((shifted * d, scores[ok], classes[ok], moved))
        return parts

    def _refine(self, items: list[Item], detector: str, threshold: float) -> list[Parts]:
        """A cascade's refiner on windows around candidates (level 0): boxes cut by a window
        edge inside the scene are dropped, the window around their own candidate sees them."""
        parts: list[Parts] = []
        size = (self.reader.scene.width, self.reader.scene.height)
        for (b, _, _), (boxes, scores, classes, corners) in self._predict(
            items, detector, self.card.cascade.window if self.card.cascade else 256, threshold
        ):
            found = PixelDetections.build(boxes, scores, classes, class_names=self.card.classes)
            found = dataclasses.replace(found, corners=corners).shifted(b.x0, b.y0)
            window = Window(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0)
            tile = Tile(level=0, index=b.index, window=window, core=window, downsample=1)
            kept = drop_truncated(found, tile, scene_size=size, margin=2.0)
            parts.append((kept.boxes, kept.scores, kept.classes, kept.corners))
        return parts

    def _evidence(self, o: BlockOutput, d: int) -> npt.NDArray[np.float64]:
        """Peaks of the coarse level above the zoom's evidence threshold, any size, on valid
        pixels: ``(M, 5)`` level-0 centre ``x, y``, score, width, height (what a zoom
        decision sees)."""
        net = self.detectors.network()
        boxes, scores, _ = decode_peaks(
            o.out, num_classes=net.spec.num_classes, stride=net.stride, origin=o.origin,
            keep=o.keep, threshold=self.cfg.zoom.evidence_threshold,
            max_peaks=self.cfg.max_per_block,
        )  # fmt: skip
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        ok = _valid_at(o.valid, o.block, cx, cy)
        w, h = (boxes[:, 2] - boxes[:, 0]) * d, (boxes[:, 3] - boxes[:, 1]) * d
        cols = (cx[ok] * d, cy[ok] * d, scores[ok], w[ok], h[ok])
        return np.stack(cols, axis=1).reshape(-1, EVIDENCE_COLUMNS)

    def _decode(self, o: BlockOutput, rule: LevelRule, d: int, threshold: float) -> Parts:
        net = self.detectors.network()
        boxes, scores, classes = decode_peaks(
            o.out,
            num_classes=net.spec.num_classes,
            stride=net.stride,
            origin=o.origin,
            keep=o.keep,
            threshold=threshold,
            max_peaks=self.cfg.max_per_block,
        )
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        ok = (side >= rule.min_size) & (side < rule.max_size) & _valid_at(o.valid, o.block, cx, cy)
        return boxes[ok] * d, scores[ok], classes[ok], None
