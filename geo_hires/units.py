"""Work units: the deterministic plan every executor runs, and the code that runs one unit.

A unit is a batch of same-shape blocks of one level. Planning is a pure function of the scene,
the model and the config, so a local run, a Ray run and a resumed run all cut the same units
with the same keys, and :class:`UnitRunner` turns each into the same bytes wherever it runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window

from geo_hires.errors import ConfigError
from geo_hires.journal import UnitResult
from geo_hires.models.codec import decode_peaks
from geo_hires.models.fcn import FCNDetector
from geo_hires.models.registry import LevelRule, ModelCard
from geo_hires.scan import (
    Block,
    BlockOutput,
    batch_blocks,
    forward_batch,
    halo_for,
    plan_blocks,
    prepare,
)
from geo_hires.scene import Scene, SceneReader

__all__ = [
    "DetectConfig",
    "Item",
    "LevelRun",
    "Unit",
    "UnitRunner",
    "level_downsample",
    "plan_units",
]

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
    cores themselves (level-0 ``x0, y0, x1, y1``: the coverage)."""

    name: str
    downsample: int
    blocks: int
    skipped_nodata: int
    skipped_aoi: int = 0
    pixels: int = 0
    pixels_scanned: int = 0
    cores: tuple[tuple[int, int, int, int], ...] = ()


def level_downsample(rule: LevelRule, scene: Scene, card: ModelCard) -> int:
    """Downsample of a level for ``scene``: from ground size when the GSD is known.

    Without a GSD (no CRS) the scene is assumed to be at the model's training GSD.
    """
    if scene.gsd_m:
        return max(1, round(rule.target_gsd_m / scene.gsd_m))
    return max(1, round(rule.target_gsd_m / card.gsd_m)) if card.gsd_m else rule.downsample


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
    model: FCNDetector,
    card: ModelCard,
    cfg: DetectConfig,
    *,
    has_data: Callable[[Window], bool] | None = None,
    in_aoi: Callable[[Window], bool] | None = None,
) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
    """Every level's blocks, batched into keyed units; left out: blocks whose core misses the
    AOI (``in_aoi`` on the core's level-0 window), then nodata-only blocks (``has_data``)."""
    units: list[Unit] = []
    runs = []
    halo = halo_for(model.receptive_field, model.stride)
    names = [r.name for r in card.levels]
    unknown = sorted(set(cfg.levels or ()) - set(names))
    if unknown:
        raise ConfigError(f"model {card.name!r} has no level {unknown[0]!r}; its levels: {names}")
    for li, rule in enumerate(card.levels):
        if cfg.levels is not None and rule.name not in cfg.levels:
            continue
        d = level_downsample(rule, scene, card)
        lw, lh = _level_size(scene, d)
        blocks = plan_blocks(lw, lh, core=cfg.core, halo=halo, stride=model.stride)
        aimed = [b for b in blocks if in_aoi is None or in_aoi(_core0(b, d, scene))]
        kept = [b for b in aimed if has_data is None or has_data(_level0(b, d))]
        cores = [_core0(b, d, scene) for b in kept]
        for k, batch in enumerate(batch_blocks(kept, cfg.batch_size)):
            units.append(Unit(key=f"L{li}-U{k}", level=li, downsample=d, blocks=batch))
        runs.append(
            LevelRun(
                name=rule.name,
                downsample=d,
                blocks=len(blocks),
                skipped_nodata=len(aimed) - len(kept),
                skipped_aoi=len(blocks) - len(aimed),
                pixels=scene.pixels,
                pixels_scanned=sum(w.width * w.height for w in cores),
                cores=tuple(
                    (w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height) for w in cores
                ),
            )
        )
    return tuple(units), tuple(runs)


class UnitRunner:
    """Reads and computes units of one scene with one model (used by every executor).

    Small levels (see ``DetectConfig.whole_read_pixels``) are read once and cached.
    """

    def __init__(
        self,
        reader: SceneReader,
        model: FCNDetector,
        card: ModelCard,
        cfg: DetectConfig,
        device: torch.device | None = None,
    ) -> None:
        self.reader, self.card, self.cfg = reader, card, cfg
        self.model, self.device = prepare(model, device)
        self._whole: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = {}

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
        """Forward the unit's batch and decode its blocks' cores into level-0 boxes."""
        rule = self.card.levels[unit.level]
        thr = self.cfg.score_threshold or self.card.score_threshold
        parts = [
            self._decode(o, rule, unit.downsample, thr)
            for o in forward_batch(self.model, items, self.device)
        ]
        return UnitResult(
            key=unit.key,
            level=unit.level,
            boxes=np.concatenate([p[0] for p in parts]).reshape(-1, 4)
            if parts
            else np.zeros((0, 4)),
            scores=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
            classes=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64),
        )

    def run(self, unit: Unit) -> UnitResult:
        return self.compute(unit, self.read(unit))

    def _decode(
        self, o: BlockOutput, rule: LevelRule, d: int, threshold: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        boxes, scores, classes = decode_peaks(
            o.out,
            num_classes=self.model.spec.num_classes,
            stride=self.model.stride,
            origin=o.origin,
            keep=o.keep,
            threshold=threshold,
            max_peaks=self.cfg.max_per_block,
        )
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        cx = np.clip(
            ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int) - o.block.x0, 0, o.valid.shape[1] - 1
        )
        cy = np.clip(
            ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int) - o.block.y0, 0, o.valid.shape[0] - 1
        )
        ok = (side >= rule.min_size) & (side < rule.max_size) & o.valid[cy, cx]
        return boxes[ok] * d, scores[ok], classes[ok]
