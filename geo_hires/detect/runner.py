"""Reads and computes the units of one scene with one bundle (used by every executor).

Reading is the same for every kind of level: a block's input window at its level's scale, with
its validity mask. Small levels (see ``DetectConfig.whole_read_pixels``) of local files are read
once and sliced, so files without internal tiling are not decoded again for every block; a
remote scene is always read block by block, so that only the tiles of the planned units (an
AOI's) are fetched, each once through GDAL's block cache. Both give the same pixels
(:func:`geo_hires.scene.read._pieces`). Computing is
the level's own (:mod:`geo_hires.detect.kinds`), chosen once per level when the runner starts.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window

from geo_hires.detect.forward import Item, default_device
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.kinds import Parts, level_kinds
from geo_hires.detect.levels import coarsest, level_scales, level_size, level_window
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import Unit
from geo_hires.errors import LevelSkippedWarning, quiet
from geo_hires.models.bundle import Bundle
from geo_hires.scene import SceneReader

__all__ = ["UnitRunner"]


def _result(
    unit: Unit,
    parts: list[Parts],
    evidence: npt.NDArray[np.float64] | None,
    seconds: dict[str, float],
) -> UnitResult:
    corners = [p[3] for p in parts if p[3] is not None]
    return UnitResult(
        key=unit.key,
        level=unit.level,
        boxes=np.concatenate([p[0] for p in parts]).reshape(-1, 4) if parts else np.zeros((0, 4)),
        scores=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
        classes=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64),
        corners=np.concatenate(corners).reshape(-1, 4, 2) if corners else None,
        evidence=evidence,
        seconds=seconds,
    )


class UnitRunner:
    """Reads and computes units of one scene with one bundle (see the module docstring)."""

    def __init__(
        self,
        reader: SceneReader,
        bundle: Bundle,
        cfg: DetectConfig,
        device: torch.device | None = None,
    ) -> None:
        self.reader, self.cfg = reader, cfg
        scene = reader.scene
        coarse = coarsest(bundle.card, scene, cfg) if cfg.zoom.selective else None
        with quiet(LevelSkippedWarning):  # said once, when planned
            scales = level_scales(bundle.card, scene, cfg)
        self.kinds = level_kinds(
            bundle, cfg, scales, device=device or default_device(),
            scene_size=(scene.width, scene.height), evidence_level=coarse,
        )  # fmt: skip
        self._whole: dict[float, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = {}
        self._read_s: dict[str, float] = {}  # written by the read-ahead thread, popped here

    def read(self, unit: Unit) -> list[Item]:
        """Inputs of each block of ``unit``: (block, image, valid)."""
        start = time.perf_counter()
        try:
            return self._read(unit)
        finally:
            self._read_s[unit.key] = time.perf_counter() - start

    def _read(self, unit: Unit) -> list[Item]:
        d = unit.downsample
        lw, lh = level_size(self.reader.scene, d)
        if lw * lh <= self.cfg.whole_read_pixels and not self.reader.scene.remote:
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
            w = self.reader.read(level_window(b, d), out_size=b.shape)
            items.append((b, w.image, w.valid))
        return items

    def compute(self, unit: Unit, items: list[Item]) -> UnitResult:
        """Run the unit's level on its batch; its blocks' boxes in level-0 pixels."""
        parts, evidence, seconds = self.kinds[unit.level].compute(items, unit.downsample)
        seconds = {"read": self._read_s.pop(unit.key, 0.0), **seconds}
        return _result(unit, parts, evidence, seconds)

    def run(self, unit: Unit) -> UnitResult:
        return self.compute(unit, self.read(unit))
