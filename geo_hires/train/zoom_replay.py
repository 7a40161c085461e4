"""Both passes of a zoomed run, recorded once per image so that any zoom decision replays.

Why replay: a zoom decision on a window only changes which detections the run keeps, so the
coarse level (everywhere, with its evidence) and the fine level (every window, one unit each)
run once per image, and every later decision — while training the policy, calibrating its
safety rule or drawing curves — is a lookup followed by the pipeline's own merge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from geo_hires.detect.cascade import box_iou
from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.levels import coarsest
from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.plan import plan_units
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, NoCRSWarning, quiet
from geo_hires.merge import merge_results
from geo_hires.models.bundle import Bundle
from geo_hires.models.card import ModelCard
from geo_hires.scene import Scene, open_scene

__all__ = ["ImageReplay", "record_image", "record_images", "window_gains"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ImageReplay:
    """One image's two passes, kept so that any zoom decision can be replayed.

    Attributes:
        coarse: The coarse level's unit results (with evidence).
        fine: One unit result per fine window (the fine level's detections there).
        cores: ``(N, 4)`` level-0 cores of those windows.
        evidence: ``(M, 5)`` the coarse level's evidence.
        truth: Ground truth in level-0 pixels.
    """

    coarse: tuple[UnitResult, ...]
    fine: tuple[UnitResult, ...]
    cores: npt.NDArray[np.float64]
    evidence: npt.NDArray[np.float64]
    truth: PixelDetections

    def detections(
        self, chosen: npt.NDArray[np.bool_], card: ModelCard, scene: Scene, cfg: DetectConfig
    ) -> PixelDetections:
        """What a run that zooms ``chosen`` windows outputs (merged as the pipeline does)."""
        picked = [r for r, ok in zip(self.fine, chosen, strict=True) if ok]
        return merge_results([*self.coarse, *picked], card, scene, cfg)


def record_image(
    scene: Scene, model: Bundle, card: ModelCard, truth: PixelDetections, window: int
) -> ImageReplay:
    """Run both passes over ``scene`` once: the coarse level with evidence, then the fine
    level's windows, each its own unit."""
    cfg = DetectConfig(
        batch_size=1, score_threshold=0.05, zoom=ZoomConfig(mode="all", budget=1.0, window=window)
    )
    coarse_i = coarsest(card, scene, cfg)
    if coarse_i is None:
        raise ConfigError(
            f"{scene.path}: the bundle scans one level on this scene (its GSD folds or skips "
            "the others); a zoom policy learns from a coarse and a fine level"
        )
    fine_i = tuple(i for i in range(len(card.levels)) if i != coarse_i)
    executor = LocalExecutor(device=torch.device("cpu"))
    units, _ = plan_units(scene, card, cfg, only=(coarse_i,))
    coarse: list[UnitResult] = []
    executor.run_units(scene, model, units, cfg, on_result=coarse.append, read_config=None)
    units, _ = plan_units(
        scene, card, cfg, only=fine_i, select=lambda _li, c: np.ones(len(c), bool)
    )
    by_key: dict[str, UnitResult] = {}
    executor.run_units(
        scene, model, units, cfg, on_result=lambda r: by_key.update({r.key: r}),
        read_config=None,
    )  # fmt: skip
    w, h = scene.width, scene.height
    cores = np.array(  # per unit (batching reorders blocks by shape: not the runs' order)
        [
            (b.cx0 * u.downsample, b.cy0 * u.downsample,
             min(b.cx1 * u.downsample, w), min(b.cy1 * u.downsample, h))
            for u in units
            for b in u.blocks
        ],
        float,
    ).reshape(-1, 4)  # fmt: skip
    found = [r.evidence for r in coarse if r.evidence is not None]
    return ImageReplay(
        coarse=tuple(sorted(coarse, key=lambda r: r.key)),
        fine=tuple(by_key[u.key] for u in units),
        cores=cores,
        evidence=np.concatenate(found) if found else np.zeros((0, 5)),
        truth=truth,
    )


def record_images(
    items: Sequence[tuple[str, PixelDetections]],
    model: Bundle,
    window: int,
    log: Callable[[str], None] = lambda _s: None,
) -> list[tuple[ImageReplay, Scene]]:
    """:func:`record_image` of each ``(scene path, truth in its pixels)``, said every tenth
    (81 training images took 4 minutes without a word). Training images without a CRS are
    the rule (their labels are in pixels): not warned about, one line per image."""
    out = []
    for i, (path, truth) in enumerate(items, 1):
        with quiet(NoCRSWarning):
            scene = open_scene(path)
        out.append((record_image(scene, model, model.card, truth, window), scene))
        if i % 10 == 0 and i < len(items):
            log(f"recorded {i} of {len(items)} scenes")
    return out


def _found(dets: PixelDetections, truth: npt.NDArray[np.float64], thr: float) -> int:
    keep = dets.scores >= thr
    if not len(truth) or not keep.any():
        return 0
    iou = box_iou(truth, dets.boxes[keep])
    return int((iou.max(axis=1) >= 0.5).sum())


def window_gains(
    replay: ImageReplay, card: ModelCard, scene: Scene, threshold: float
) -> npt.NDArray[np.float64]:
    """Recall gain (objects) of each window's fine pass over the coarse pass there."""
    cfg = DetectConfig(score_threshold=0.05)
    none = np.zeros(len(replay.fine), bool)
    base = replay.detections(none, card, scene, cfg)
    t = replay.truth.boxes
    cx, cy = (t[:, 0] + t[:, 2]) / 2, (t[:, 1] + t[:, 3]) / 2
    gains = np.zeros(len(replay.fine))
    for i, (x0, y0, x1, y1) in enumerate(replay.cores):
        inside = t[(cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)]
        if not len(inside):
            continue
        one = none.copy()
        one[i] = True
        with_fine = replay.detections(one, card, scene, cfg)
        gains[i] = _found(with_fine, inside, threshold) - _found(base, inside, threshold)
    return gains
