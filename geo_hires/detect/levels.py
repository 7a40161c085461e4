"""A card's levels on one scene: their downsample factor, size, and the record of a level run.

One vocabulary from the card to the run: a card declares :class:`~geo_hires.models.card.Level`
values (ground resolution, object sizes, detector); a run plans each on the scene and records
a :class:`LevelRun` (what was planned, scanned and left out), which the summary line, the
provenance and the coverage layer read.
"""

from __future__ import annotations

import dataclasses
import math

from rasterio.windows import Window

from geo_hires.detect.blocks import Block
from geo_hires.detect.options import DetectConfig
from geo_hires.errors import LevelSkippedWarning, quiet, warn
from geo_hires.models.card import Level, ModelCard
from geo_hires.scene import Scene

__all__ = [
    "MAX_UPSAMPLE",
    "REFINE",
    "LevelRun",
    "LevelScale",
    "coarsest",
    "core_window",
    "level_downsample",
    "level_names",
    "level_scales",
    "level_size",
    "level_window",
    "refine_downsample",
    "xyxy",
]

REFINE = "refine"
"""Level name of a cascade's refiner detections (level index ``len(card.levels)``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelRun:
    """One level as planned: its downsample factor, block counts, level-0 pixels of the
    block cores (all, and those scanned: not left out for nodata or the AOI), and the scanned
    cores themselves (level-0 ``x0, y0, x1, y1``: the coverage). ``windows``: for a zoomed fine
    level, the windows it could have scanned (those scanned are ``cores``)."""

    name: str
    downsample: float
    blocks: int
    skipped_nodata: int
    skipped_aoi: int = 0
    pixels: int = 0
    pixels_scanned: int = 0
    cores: tuple[tuple[int, int, int, int], ...] = ()
    windows: int | None = None
    folded: tuple[str, ...] = ()

    @property
    def scanned(self) -> int:
        """Blocks scanned: not left out for nodata or the AOI; for a zoomed level, the windows
        zoomed."""
        if self.windows is not None:
            return len(self.cores)
        return self.blocks - self.skipped_nodata - self.skipped_aoi

    def describe(self) -> str:
        """``name: N blocks (xD)`` (``k of N blocks`` when nodata or the AOI left some out), or
        for a zoomed level ``name: k of n windows zoomed``; an upsampled level says
        ``(up x2)``, a level others were folded into names them."""
        d = self.downsample
        scale = f"(x{d:g}" if d >= 1 else f"(up x{round(1 / d)}"
        scale += f", {'+'.join(self.folded)} folded in)" if self.folded else ")"
        if self.windows is not None:
            return f"{self.name}: {self.scanned} of {self.windows} windows zoomed {scale}"
        some = f"{self.scanned} of " if self.scanned < self.blocks else ""
        return f"{self.name}: {some}{self.blocks} blocks {scale}"


MAX_UPSAMPLE = 2
"""The most a level is upsampled when the scene is coarser than the level's GSD; a level that
would need more is not scanned (the scene cannot show what it looks for)."""


def level_downsample(rule: Level, scene: Scene, card: ModelCard) -> float:
    """Level-0 pixels per level pixel of ``rule`` on ``scene``, from ground sizes: an integer
    factor when the scene is finer than the level's GSD, 1 / u (u = 2) when it is coarser by
    about u, so the level sees objects at the size it was trained for; ``inf`` when it would
    need more than :data:`MAX_UPSAMPLE` (the level is then left out).

    Without a GSD (no CRS) the scene is assumed to be at the model's training GSD.
    """
    gsd = scene.gsd_m or card.gsd_m
    if not gsd:
        return rule.downsample
    ratio = rule.target_gsd_m / gsd
    up = round(1 / ratio)
    if up <= 1:  # the scene is finer, or coarser by less than 1.5x: read at x1 or decimated
        return max(1, round(ratio))
    return 1 / up if up <= MAX_UPSAMPLE else math.inf


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelScale:
    """A level as a run scans it on one scene.

    Attributes:
        index: The level's index in the card (unit keys and detections carry it).
        rule: The card's level, its size range widened by the levels folded into it.
        downsample: Level-0 pixels per level pixel (0.5: upsampled x2).
        folded: Names of the card's levels that fell on the same scale with the same detector:
            their pixels are this level's, so they are scanned once, here.
    """

    index: int
    rule: Level
    downsample: float
    folded: tuple[str, ...] = ()


def level_scales(card: ModelCard, scene: Scene, cfg: DetectConfig) -> tuple[LevelScale, ...]:
    """The levels a run scans on ``scene`` (those ``cfg.levels`` names), finest first in card
    order: a level that would need more than :data:`MAX_UPSAMPLE` is left out with a
    :class:`~geo_hires.errors.LevelSkippedWarning`; a level at the scale and with the detector
    of an earlier one is folded into it, so no two levels read the same pixels at one scale."""
    kept: list[LevelScale] = []
    for i, rule in enumerate(card.levels):
        if cfg.levels is not None and rule.name not in cfg.levels:
            continue
        d = level_downsample(rule, scene, card)
        if math.isinf(d):
            _warn_skipped(rule, scene, card)
            continue
        same = next(
            (k for k in kept if k.downsample == d and k.rule.detector == rule.detector), None
        )
        if same is None:
            kept.append(LevelScale(index=i, rule=rule, downsample=d))
            continue
        wider = dataclasses.replace(
            same.rule,
            min_size=min(same.rule.min_size, rule.min_size),
            max_size=max(same.rule.max_size, rule.max_size),
        )
        folded = dataclasses.replace(same, rule=wider, folded=(*same.folded, rule.name))
        kept[kept.index(same)] = folded
    return tuple(kept)


def _warn_skipped(rule: Level, scene: Scene, card: ModelCard) -> None:
    gsd = scene.gsd_m or card.gsd_m
    warn(
        f"level {rule.name!r} ({rule.target_gsd_m:g} m) is not scanned: the scene's "
        f"{gsd:.2f} m pixels would need more than x{MAX_UPSAMPLE} upsampling",
        LevelSkippedWarning,
        stacklevel=3,
    )


def refine_downsample(card: ModelCard, scene: Scene) -> float:
    """Level-0 pixels per pixel of a cascade's refiner windows: the scene read at the card's
    GSD (the refiner's), as a level at that GSD would be; ``inf`` when the scene is too coarse
    (warned)."""
    refine = Level(name=REFINE, target_gsd_m=card.gsd_m, downsample=1)
    d = level_downsample(refine, scene, card)
    if math.isinf(d):
        _warn_skipped(refine, scene, card)
    return d


def level_names(card: ModelCard) -> tuple[str, ...]:
    """The card's level names, and ``refine`` after them when it has a cascade."""
    return tuple(r.name for r in card.levels) + ((REFINE,) if card.cascade else ())


def coarsest(card: ModelCard, scene: Scene, cfg: DetectConfig) -> int | None:
    """Card index of the run's coarsest level (largest downsample; the first of equals): the
    one a zoomed run always scans, the others being the fine levels whose windows it chooses.
    ``None`` when only one level is scanned: there is nothing to zoom into."""
    with quiet(LevelSkippedWarning):  # said once, when planned
        scales = level_scales(card, scene, cfg)
    if len(scales) < 2:
        return None
    return max(scales, key=lambda s: (s.downsample, -s.index)).index


def level_size(scene: Scene, d: float) -> tuple[int, int]:
    """``(width, height)`` of the scene at downsample ``d`` (a cut pixel counts whole)."""
    return math.ceil(scene.width / d), math.ceil(scene.height / d)


def level_window(block: Block, d: float) -> Window:
    """The block's input extent in level-0 pixels (whole pixels: at x2 upsampling every block
    edge is even, being a multiple of a stride or the level's edge)."""
    return Window(block.x0 * d, block.y0 * d, (block.x1 - block.x0) * d, (block.y1 - block.y0) * d)


def core_window(block: Block, d: float, scene: Scene) -> Window:
    """The block's core in level-0 pixels, clipped to the scene."""
    x0, y0 = block.cx0 * d, block.cy0 * d
    x1, y1 = min(block.cx1 * d, scene.width), min(block.cy1 * d, scene.height)
    return Window(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def xyxy(w: Window) -> tuple[int, int, int, int]:
    """A window as integer ``x0, y0, x1, y1``."""
    return (int(w.col_off), int(w.row_off), int(w.col_off + w.width), int(w.row_off + w.height))
