"""The one planner: every level's blocks, batched into keyed work units.

Planning is a pure function of the scene, the model card and the config (no network is
loaded), so a local run, a Ray run, a resumed run and ``geo-hires plan`` all cut the same units
with the same keys, and every executor turns them into the same bytes. Each unit names the
*kind* of level it belongs to (:data:`KINDS`), chosen here once, so the code that runs a unit
never branches on the detector.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geo_hires.detect.blocks import Block, batch_blocks, halo_for, plan_blocks
from geo_hires.detect.levels import (
    LevelRun,
    core_window,
    level_scales,
    level_size,
    level_window,
    xyxy,
)
from geo_hires.detect.options import DetectConfig
from geo_hires.errors import ConfigError
from geo_hires.models.arch import receptive_field
from geo_hires.models.card import FCN, Level, ModelCard
from geo_hires.scene import Scene

__all__ = [
    "KINDS",
    "WINDOW_STRIDE",
    "Kind",
    "MaskFn",
    "Select",
    "Unit",
    "level_blocks",
    "mask_lookup",
    "plan_units",
]

Kind = Literal["scan", "window", "refine"]
KINDS: tuple[Kind, ...] = ("scan", "window", "refine")
"""How a unit's blocks are computed: the bundle's scanning network over blocks that share
their overlap (``scan``), an ultralytics model over windows (``window``), or a cascade's
refiner over windows around candidates (``refine``)."""
WINDOW_STRIDE = 16
"""Grid of ultralytics windows (core and halo are multiples of it)."""
Select = Callable[[int, npt.NDArray[np.float64]], npt.NDArray[np.bool_]]
"""Chooses a fine level's windows: (level index, ``(N, 4)`` level-0 cores) → mask."""
MaskFn = Callable[[Window], bool]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unit:
    """A work unit: same-shape blocks of one level, run as one batch.

    Attributes:
        key: ``L{level}-U{index}`` (``R-U{index}`` for a cascade's refiner), stable for a given
            scene, model and config.
        level: Level index in the model card (``len(card.levels)`` for the refiner).
        downsample: Level-0 pixels per level pixel (0.5 for a level upsampled x2).
        blocks: The blocks (level pixels).
        kind: How the blocks are computed (:data:`KINDS`).
    """

    key: str
    level: int
    downsample: float
    blocks: tuple[Block, ...]
    kind: Kind = "scan"


def level_blocks(
    rule: Level, card: ModelCard, size: tuple[int, int], core: int
) -> tuple[Block, ...]:
    """Blocks of a scanning level (halo from the network's receptive field) or an ultralytics
    level (windows of ``rule.window`` whose cores tile the level, ``rule.halo`` of overlap)."""
    if rule.detector == FCN:
        if card.arch is None:
            raise ConfigError(f"model {card.name!r}: level {rule.name!r} needs an 'arch'")
        stride = card.arch.stride
        halo = halo_for(receptive_field(card.arch), stride)
        return plan_blocks(*size, core=core, halo=halo, stride=stride)
    core = rule.window - 2 * rule.halo
    return plan_blocks(*size, core=core, halo=rule.halo, stride=WINDOW_STRIDE)


def mask_lookup(valid: npt.NDArray[np.bool_], scene: Scene) -> MaskFn:
    """A predicate 'does this level-0 window touch valid data' over a decimated mask.

    The window's footprint is widened by one mask pixel on each side so that decimation can
    only keep a window, never wrongly skip one whose valid sliver fell between samples.
    """
    mh, mw = valid.shape
    sy, sx = mh / scene.height, mw / scene.width

    def has_data(win: Window) -> bool:
        r0 = max(0, math.floor(win.row_off * sy) - 1)
        c0 = max(0, math.floor(win.col_off * sx) - 1)
        r1 = min(mh, math.ceil((win.row_off + win.height) * sy) + 1)
        c1 = min(mw, math.ceil((win.col_off + win.width) * sx) + 1)
        return bool(valid[r0:r1, c0:c1].any())

    return has_data


def _check_levels(card: ModelCard, cfg: DetectConfig) -> None:
    names = [r.name for r in card.levels]
    unknown = sorted(set(cfg.levels or ()) - set(names))
    if unknown:
        raise ConfigError(f"model {card.name!r} has no level {unknown[0]!r}; its levels: {names}")


def plan_units(
    scene: Scene,
    card: ModelCard,
    cfg: DetectConfig,
    *,
    has_data: MaskFn | None = None,
    in_aoi: MaskFn | None = None,
    only: Sequence[int] | None = None,
    select: Select | None = None,
) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
    """Every level's blocks, batched into keyed units; left out: blocks whose core misses the
    AOI (``in_aoi`` on the core's level-0 window), then nodata-only blocks (``has_data``).

    A zoomed run plans in two stages: the coarsest level alone (``only``), then the fine levels
    (``only``), whose windows (``cfg.zoom.window`` cores) ``select`` chooses from, given the
    level index and the windows' level-0 cores.
    """
    _check_levels(card, cfg)
    units: list[Unit] = []
    runs = []
    zoomed = cfg.zoom.selective and select is not None
    for scale in level_scales(card, scene, cfg):
        li, rule, d = scale.index, scale.rule, scale.downsample
        if only is not None and li not in only:
            continue
        core = cfg.zoom.window if zoomed else cfg.core
        blocks = level_blocks(rule, card, level_size(scene, d), core)
        aimed = [b for b in blocks if in_aoi is None or in_aoi(core_window(b, d, scene))]
        kept = [b for b in aimed if has_data is None or has_data(level_window(b, d))]
        windows, nodata = len(kept), len(aimed) - len(kept)
        if zoomed and select is not None:
            boxes = np.array([xyxy(core_window(b, d, scene)) for b in kept], float).reshape(-1, 4)
            kept = [b for b, ok in zip(kept, select(li, boxes), strict=True) if ok]
        kind: Kind = "scan" if rule.detector == FCN else "window"
        for k, batch in enumerate(batch_blocks(kept, cfg.batch_size)):
            units.append(Unit(key=f"L{li}-U{k}", level=li, downsample=d, blocks=batch, kind=kind))
        cores = [core_window(b, d, scene) for b in kept]
        runs.append(
            LevelRun(
                name=rule.name,
                downsample=d,
                blocks=len(blocks),
                skipped_nodata=nodata,
                skipped_aoi=len(blocks) - len(aimed),
                pixels=scene.pixels,
                pixels_scanned=sum(w.width * w.height for w in cores),
                cores=tuple(xyxy(w) for w in cores),
                windows=windows if zoomed else None,
                folded=scale.folded,
            )
        )
    return tuple(units), tuple(runs)
