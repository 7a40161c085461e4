"""Selective zoom: which fine windows get the full-resolution pass (issue #12).

Most of a large scene holds nothing, yet the fine level reads and scans all of it. With a zoom
mode other than ``all``, the coarse level is scanned first and also leaves *evidence*: every
heatmap peak above a low threshold, whatever its size (the level's size rule would drop the
small objects it can only hint at). The fine level is then cut into windows of
``ZoomConfig.window`` level pixels and only the chosen ones are read and scanned:

* ``all``: every window (today's behaviour, the same blocks and bytes);
* ``gate``: windows whose strongest evidence reaches ``gate_threshold``;
* ``rl``: windows the bundle's learned policy (:mod:`geo_hires.models.zoom_policy`) zooms,
  ranked by its probability;
* ``random``: a seeded random choice (the baseline a learned policy must beat);
* ``none``: no window (coarse detections only).

``budget`` caps the share of fine windows, keeping the highest-ranked. Windows left out read no
full-resolution pixels at all and keep their coarse detections. Everything here is a pure
function of the evidence and the windows, so local, Ray and resumed runs choose the same ones.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from geo_hires.errors import ConfigError

__all__ = ["EVIDENCE_COLUMNS", "ZOOM_MODES", "ZoomConfig", "choose", "window_evidence"]

ZOOM_MODES = ("all", "gate", "rl", "random", "none")
EVIDENCE_COLUMNS = 5
"""Evidence rows: level-0 centre ``x, y``, score, width, height of a coarse peak."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZoomConfig:
    """How fine windows are chosen.

    Attributes:
        mode: One of :data:`ZOOM_MODES`.
        budget: At most this share of the fine windows (``(0, 1]``), the highest-ranked;
            ``None``: no cap.
        window: Fine window side in fine-level pixels (a zoom decision covers one window).
        gate_threshold: Evidence score a window needs under ``gate``.
        evidence_threshold: Coarse peaks kept as evidence (any size).
        seed: Seed of ``random``.
    """

    mode: str = "all"
    budget: float | None = None
    window: int = 512
    gate_threshold: float = 0.2
    evidence_threshold: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ZOOM_MODES:
            raise ConfigError(f"--zoom {self.mode!r}: choose one of {', '.join(ZOOM_MODES)}")
        if self.budget is not None and not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"--budget {self.budget}: give a share of windows in (0, 1]")
        if self.window < 64 or self.window % 32:
            raise ConfigError(f"zoom window {self.window}: a multiple of 32, at least 64")
        if not 0.0 < self.evidence_threshold <= self.gate_threshold < 1.0:
            raise ConfigError("zoom: 0 < evidence_threshold <= gate_threshold < 1")

    @property
    def selective(self) -> bool:
        """Whether windows are chosen at all (``all`` scans the fine level as it always did)."""
        return self.mode != "all" or self.budget is not None


def window_evidence(
    evidence: npt.NDArray[np.float64], cores: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Strongest evidence score per window: ``evidence`` rows (:data:`EVIDENCE_COLUMNS`) and
    window cores ``(x0, y0, x1, y1)``, both in level-0 pixels; 0 for a window without any."""
    out = np.zeros(len(cores))
    if not len(evidence) or not len(cores):
        return out
    x, y, s = evidence[:, 0], evidence[:, 1], evidence[:, 2]
    for i, (x0, y0, x1, y1) in enumerate(cores):
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        if inside.any():
            out[i] = s[inside].max()
    return out


def choose(cfg: ZoomConfig, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which windows to zoom, given each window's score (``gate``: its evidence; ``rl``: the
    policy's zoom probability, zoomed from 0.5)."""
    n = len(scores)
    if cfg.mode == "none" or n == 0:
        return np.zeros(n, bool)
    if cfg.mode == "random":
        rank = np.random.default_rng(cfg.seed).permutation(n).astype(float)
        chosen, priority = np.ones(n, bool), -rank
    elif cfg.mode == "gate":
        chosen, priority = scores >= cfg.gate_threshold, scores
    elif cfg.mode == "rl":
        chosen, priority = scores >= 0.5, scores
    else:
        chosen, priority = np.ones(n, bool), scores
    if cfg.budget is not None:
        cap = math.ceil(cfg.budget * n - 1e-9)
        order = np.lexsort((np.arange(n), -priority))  # best first, ties by window order
        keep = np.zeros(n, bool)
        keep[order[:cap]] = True
        chosen &= keep
    return chosen
