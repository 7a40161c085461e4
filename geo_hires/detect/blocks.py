"""Blocks for shared-overlap scanning: cores that tile a level, each read with a halo, and
the batches they run in.

Cores are ``core x core`` level pixels on a grid from the origin (the last row/column is
shorter); a block's input is its core widened by ``halo`` on every side and clipped to the level.
Clipping (rather than padding) matters: at the level's edge the network then pads each layer
exactly as a whole-image pass does. Core, halo and hence every block origin are multiples of the
network's stride, so block output cells line up with the whole-image output grid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from geo_hires.errors import ConfigError, option

__all__ = ["Block", "batch_blocks", "halo_for", "plan_blocks"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Block:
    """One block of a level, in level pixels.

    Attributes:
        index: ``(row, col)`` of the core in the level's grid.
        x0, y0, x1, y1: Input extent (core plus halo, clipped to the level).
        cx0, cy0, cx1, cy1: Core extent; cores tile the level exactly once.
    """

    index: tuple[int, int]
    x0: int
    y0: int
    x1: int
    y1: int
    cx0: int
    cy0: int
    cx1: int
    cy1: int

    @property
    def shape(self) -> tuple[int, int]:
        """Input ``(height, width)`` in level pixels (blocks of one shape batch together)."""
        return self.y1 - self.y0, self.x1 - self.x0


def halo_for(receptive_field: int, stride: int) -> int:
    """Smallest stride-aligned halo that keeps a block's kept outputs exact.

    A cell depends on input within ``(rf - 1) / 2`` pixels of its centre; the decoder also
    looks one cell (``stride`` px) past the core for its 3x3 peak test, so the halo covers both.
    """
    return math.ceil(((receptive_field - 1) / 2 + stride) / stride) * stride


def plan_blocks(width: int, height: int, *, core: int, halo: int, stride: int) -> tuple[Block, ...]:
    """Blocks covering a ``width x height`` level, row by row.

    Raises:
        ConfigError: ``core`` or ``halo`` is not a positive multiple of ``stride``.
    """
    if core <= 0 or core % stride or halo < 0 or halo % stride:
        raise ConfigError(
            f"block core ({core}) and halo ({halo}) must be multiples of the network "
            f"stride {stride}: give {option('--block')} a multiple of {stride} (e.g. "
            f"{max(stride, core - core % stride)})"
        )
    blocks = []
    for r in range(math.ceil(height / core)):
        for c in range(math.ceil(width / core)):
            cx0, cy0 = c * core, r * core
            cx1, cy1 = min(cx0 + core, width), min(cy0 + core, height)
            blocks.append(
                Block(
                    index=(r, c),
                    x0=max(0, cx0 - halo),
                    y0=max(0, cy0 - halo),
                    x1=min(width, cx1 + halo),
                    y1=min(height, cy1 + halo),
                    cx0=cx0,
                    cy0=cy0,
                    cx1=cx1,
                    cy1=cy1,
                )
            )
    return tuple(blocks)


def batch_blocks(blocks: Iterable[Block], batch_size: int) -> tuple[tuple[Block, ...], ...]:
    """Blocks grouped by input shape, in chunks of at most ``batch_size`` (deterministic).

    Why a fixed plan: every executor (local or Ray) runs exactly these batches, so the
    floating-point results, and hence the output files, are identical.
    """
    if batch_size < 1:
        raise ConfigError("batch_size must be >= 1")
    ordered = sorted(blocks, key=lambda b: (b.shape, b.index))
    batches: list[tuple[Block, ...]] = []
    for b in ordered:
        last = batches[-1] if batches else ()
        if last and len(last) < batch_size and last[0].shape == b.shape:
            batches[-1] = (*last, b)
        else:
            batches.append((b,))
    return tuple(batches)
