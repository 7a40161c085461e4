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
from geo_hires.models.card import Level, ModelCard
from geo_hires.scene import Scene

__all__ = [
    "REFINE",
    "LevelRun",
    "coarsest",
    "core_window",
    "level_downsample",
    "level_names",
    "level_size",
    "level_window",
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
    downsample: int
    blocks: int
    skipped_nodata: int
    skipped_aoi: int = 0
    pixels: int = 0
    pixels_scanned: int = 0
    cores: tuple[tuple[int, int, int, int], ...] = ()
    windows: int | None = None

    def describe(self) -> str:
        """``name: N blocks (xD)``, or for a zoomed level ``name: k of n windows zoomed``."""
        scale = f"(x{self.downsample})"
        if self.windows is not None:
            return f"{self.name}: {len(self.cores)} of {self.windows} windows zoomed {scale}"
        return f"{self.name}: {self.blocks} blocks {scale}"


def level_downsample(rule: Level, scene: Scene, card: ModelCard) -> int:
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


def level_size(scene: Scene, d: int) -> tuple[int, int]:
    """``(width, height)`` of the scene at downsample ``d`` (a cut pixel counts whole)."""
    return math.ceil(scene.width / d), math.ceil(scene.height / d)


def level_window(block: Block, d: int) -> Window:
    """The block's input extent in level-0 pixels."""
    return Window(block.x0 * d, block.y0 * d, (block.x1 - block.x0) * d, (block.y1 - block.y0) * d)


def core_window(block: Block, d: int, scene: Scene) -> Window:
    """The block's core in level-0 pixels, clipped to the scene."""
    x0, y0 = block.cx0 * d, block.cy0 * d
    x1, y1 = min(block.cx1 * d, scene.width), min(block.cy1 * d, scene.height)
    return Window(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def xyxy(w: Window) -> tuple[int, int, int, int]:
    """A window as integer ``x0, y0, x1, y1``."""
    return (int(w.col_off), int(w.row_off), int(w.col_off + w.width), int(w.row_off + w.height))
