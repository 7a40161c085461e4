"""Selective zoom: which fine windows get the full-resolution pass.

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

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from geo_hires.detect.journal import UnitResult
from geo_hires.detect.options import ZoomConfig
from geo_hires.detect.plan import Select
from geo_hires.errors import ConfigError, option

if TYPE_CHECKING:
    from geo_hires.models.bundle import Bundle
    from geo_hires.models.card import ModelCard

__all__ = [
    "EVIDENCE_COLUMNS",
    "check_policy",
    "choose",
    "require_policy",
    "window_evidence",
    "zoom_select",
]

EVIDENCE_COLUMNS = 5
"""Evidence rows: level-0 centre ``x, y``, score, width, height of a coarse peak."""


def window_evidence(
    evidence: npt.NDArray[np.float64], cores: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Strongest evidence score per window: ``evidence`` rows (:data:`EVIDENCE_COLUMNS`) and
    window cores ``(x0, y0, x1, y1)``, both in level-0 pixels; 0 for a window without any.

    A peak counts for every window its box meets, not only the one holding its centre: the
    coarse centre of an object near a window border can lie on the other side from the fine
    one, and a window zoomed for its neighbour's object would not report it (its fine core
    does not hold it) while the window that does stayed coarse. A box of no size counts for
    the window holding its centre (``x0 <= x < x1``)."""
    out = np.zeros(len(cores))
    if not len(evidence) or not len(cores):
        return out
    x, y, s = evidence[:, 0], evidence[:, 1], evidence[:, 2]
    hw, hh = evidence[:, 3] / 2, evidence[:, 4] / 2
    for i, (x0, y0, x1, y1) in enumerate(cores):
        inside = (x + hw >= x0) & (x - hw < x1) & (y + hh >= y0) & (y - hh < y1)
        if inside.any():
            out[i] = s[inside].max()
    return out


def choose(
    cfg: ZoomConfig,
    scores: npt.NDArray[np.float64],
    forced: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_]:
    """Which windows to zoom, given each window's score (``gate``: its evidence; ``rl``: the
    policy's zoom probability, zoomed from 0.5). ``forced`` windows (the policy's safety
    rule) are zoomed whatever the mode; the budget caps the others, so that with them the
    zoomed share stays within it where it can."""
    n = len(scores)
    force = np.zeros(n, bool) if forced is None else np.asarray(forced, bool)
    if cfg.mode == "none" or n == 0:
        return force.copy()
    if cfg.mode == "random":
        rank = np.random.default_rng(cfg.seed).permutation(n).astype(float)
        chosen, priority = np.ones(n, bool), -rank
    elif cfg.mode == "gate":
        chosen, priority = scores >= cfg.gate_threshold, scores
    elif cfg.mode == "rl":
        chosen, priority = scores >= 0.5, scores
    else:
        chosen, priority = np.ones(n, bool), scores
    chosen = chosen & ~force
    if cfg.budget is not None:
        cap = max(0, math.ceil(cfg.budget * n - 1e-9) - int(force.sum()))
        order = np.lexsort((np.arange(n), -priority))  # best first, ties by window order
        keep = np.zeros(n, bool)
        keep[order[chosen[order]][:cap]] = True
        chosen &= keep
    return chosen | force


def require_policy(zoom: ZoomConfig, card: ModelCard) -> None:
    """Refuse ``--zoom rl`` for a model whose card names no policy (``plan`` asks this of the
    card alone: it printed a plan that ``detect`` then refused)."""
    if zoom.mode != "rl" or card.extra.get("zoom_policy"):
        return
    gate, flag = option("--zoom", "gate"), option("--zoom")
    instead = f"use {gate}" if len(card.levels) > 1 else f"leave {flag} out (one level)"
    raise ConfigError(
        f"{option('--zoom', 'rl')}: model {card.name!r} has no zoom policy; train one with "
        f"geo-hires train-zoom, or {instead}"
    )


def check_policy(zoom: ZoomConfig, bundle: Bundle) -> None:
    """Refuse ``--zoom rl`` for a bundle without a policy, or one trained on other windows."""
    policy = bundle.policy
    if policy is None:
        require_policy(zoom, bundle.card)
        raise ConfigError(  # no card file
            f"{option('--zoom', 'rl')}: model {bundle.name!r} has no zoom policy"
        )
    if policy.spec.window != zoom.window:
        raise ConfigError(
            f"{option('--zoom', 'rl')}: the policy decides on {policy.spec.window}-px windows, "
            f"the run asks for {zoom.window}"
        )


def zoom_select(
    zoom: ZoomConfig, coarse: Sequence[UnitResult], bundle: Bundle, scene_gsd: float | None
) -> Select:
    """The zoom decision over a fine level's windows, from the coarse level's evidence (and,
    for ``rl``, the bundle's policy reading it, with its safety rule)."""
    from geo_hires.models.zoom_policy import policy_features

    found = [r.evidence for r in coarse if r.evidence is not None]
    evidence = np.concatenate(found) if found else np.zeros((0, EVIDENCE_COLUMNS))
    if zoom.mode == "rl":
        check_policy(zoom, bundle)
    policy = bundle.policy

    def select(_level: int, cores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        if zoom.mode == "rl" and policy is not None:
            split = policy.spec.split_for(bundle.card.gsd_m, scene_gsd)
            feats = policy_features(evidence, cores, policy.spec.grid, split)
            return choose(zoom, policy.probabilities(feats), policy.forced(feats))
        return choose(zoom, window_evidence(evidence, cores))

    return select
