"""YOLT-style multi-scale window planning.

Each level is planned on its own pixel grid (the scene divided by the level's downsample
factor). Along each axis, window origins step by the level's stride; the last window is shifted
inward so it ends on the scene edge instead of being shrunk (models see full windows). Every
window owns a *core*: the cores of one level partition the scene exactly once, so a detection
whose centre lies in a core has exactly one owning window (the seams are at the middle of each
overlap, where both neighbours see the most context).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geo_hires.config import ScaleLevel, SmallScenePolicy, TilingConfig
from geo_hires.errors import TilingError
from geo_hires.scene.open import Scene

__all__ = [
    "LevelPlan",
    "Tile",
    "axis_cores",
    "axis_offsets",
    "level_downsample",
    "mask_lookup",
    "plan_tiles",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tile:
    """One window of one level.

    Attributes:
        level: Index of the level in ``TilingConfig.levels``.
        index: ``(row, col)`` position of the window in its level's grid.
        window: Footprint in level-0 pixels (may pass the scene edge under the PAD policy).
        core: The part of the scene this window owns, in level-0 pixels.
        downsample: Level-0 pixels per level pixel.
    """

    level: int
    index: tuple[int, int]
    window: Window
    core: Window
    downsample: int

    @property
    def id(self) -> str:
        """Stable key ``L{level}-{row}-{col}`` (journals and retries use it)."""
        return f"L{self.level}-{self.index[0]}-{self.index[1]}"

    @property
    def out_size(self) -> tuple[int, int]:
        """``(height, width)`` of the window in level pixels (what a model sees)."""
        d = self.downsample
        return int(self.window.height) // d, int(self.window.width) // d


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelPlan:
    """The windows of one level and how they were derived."""

    level: ScaleLevel
    downsample: int
    tiles: tuple[Tile, ...]
    skipped_nodata: int


def level_downsample(level: ScaleLevel, gsd_m: float | None) -> int:
    """Integer downsample of ``level`` for a scene of ``gsd_m`` metres per pixel.

    A target GSD wins when the scene's GSD is known, so levels follow ground size; the factor is
    rounded to an integer (never below 1) so level pixels align with level-0 pixels.
    """
    if level.target_gsd_m is not None and gsd_m:
        return max(1, round(level.target_gsd_m / gsd_m))
    return level.downsample


def axis_offsets(length: int, window: int, stride: int) -> list[int]:
    """Window origins along an axis of ``length`` px; the last one is shifted inward.

    Requires ``window <= length``. Consecutive origins differ by at most ``stride``.
    """
    offsets = list(range(0, length - window + 1, stride))
    if offsets[-1] + window < length:
        offsets.append(length - window)
    return offsets


def axis_cores(offsets: list[int], window: int, length: int) -> list[tuple[int, int]]:
    """Half-open cores ``[start, stop)`` partitioning ``[0, length)``, one per origin.

    The seam between neighbours sits in the middle of their overlap.
    """
    seams = [(offsets[i + 1] + offsets[i] + window) // 2 for i in range(len(offsets) - 1)]
    bounds = [0, *seams, length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(offsets))]


def _axis(length: int, level: ScaleLevel, policy: SmallScenePolicy, what: str) -> list[int]:
    if level.window <= length:
        return axis_offsets(length, level.window, level.stride)
    if policy is SmallScenePolicy.ERROR:
        raise TilingError(
            f"level {level.name!r}: window {level.window} px is larger than the scene's {what} of "
            f"{length} px at that level; use a smaller window, fewer downsampling, or "
            "small_scene='pad'/'skip'"
        )
    return [] if policy is SmallScenePolicy.SKIP else [0]


MaskFn = Callable[[Window], bool]


def _plan_level(
    scene: Scene, li: int, level: ScaleLevel, cfg: TilingConfig, has_data: MaskFn | None
) -> LevelPlan:
    d = level_downsample(level, scene.gsd_m)
    lw, lh = math.ceil(scene.width / d), math.ceil(scene.height / d)
    xs = _axis(lw, level, cfg.small_scene, "width")
    ys = _axis(lh, level, cfg.small_scene, "height")
    if not xs or not ys:
        return LevelPlan(level=level, downsample=d, tiles=(), skipped_nodata=0)
    xc = axis_cores(xs, level.window, lw)
    yc = axis_cores(ys, level.window, lh)
    tiles, skipped = [], 0
    for r, (y, (cy0, cy1)) in enumerate(zip(ys, yc, strict=True)):
        for c, (x, (cx0, cx1)) in enumerate(zip(xs, xc, strict=True)):
            win = Window(x * d, y * d, level.window * d, level.window * d)
            if has_data is not None and not has_data(win):
                skipped += 1
                continue
            core = Window(
                cx0 * d,
                cy0 * d,
                min(cx1 * d, scene.width) - cx0 * d,
                min(cy1 * d, scene.height) - cy0 * d,
            )
            tiles.append(Tile(level=li, index=(r, c), window=win, core=core, downsample=d))
    return LevelPlan(level=level, downsample=d, tiles=tuple(tiles), skipped_nodata=skipped)


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


def plan_tiles(
    scene: Scene, config: TilingConfig, *, valid: npt.NDArray[np.bool_] | None = None
) -> tuple[LevelPlan, ...]:
    """Plan every level's windows over ``scene``.

    Args:
        scene: The scene to cover.
        config: Levels and policies.
        valid: Optional decimated ``(h, w)`` validity mask of the whole scene (see
            :meth:`SceneReader.read_overview`); windows wholly invalid are skipped when
            ``config.skip_nodata`` is set.

    Returns:
        One :class:`LevelPlan` per level, in config order.
    """
    has_data = mask_lookup(valid, scene) if valid is not None and config.skip_nodata else None
    return tuple(
        _plan_level(scene, i, level, config, has_data) for i, level in enumerate(config.levels)
    )
