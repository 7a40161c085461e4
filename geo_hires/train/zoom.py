"""``geo-hires train-zoom``: a zoom policy learned with REINFORCE from replayed detections,
and the safety rule that backs it.

Both passes of each training image are recorded once (:mod:`geo_hires.train.zoom_replay`), at
the native GSD and, with ``gsds``, at others (resampled copies: what the policy meets in the
field). The reward of zooming a window is the *recall gain* of its fine pass over the coarse
pass there — truth objects centred in the window found (IoU >= 0.5, score >= the threshold)
with the fine detections merged in, minus those found without — less a ``cost`` per zoomed
window (in objects: zooming pays when it finds more than ``cost`` objects). Windows are
independent under this reward, so each is a one-step Bernoulli bandit; REINFORCE uses the
self-critical baseline (the reward of the policy's own greedy decision), which needs no value
network, plus a small entropy bonus.

The safety rule: a learned policy generalises as far as its training imagery, so windows whose
*small-object* evidence (peaks the coarse level cannot report itself) reaches a calibrated
score are always zoomed, whatever the policy says. The score is the highest that still covers
``safety_recall`` of the recall gain on the training windows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from geo_hires.detect.executors import torch_threads
from geo_hires.detect.levels import coarsest
from geo_hires.detect.options import DetectConfig
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, NoCRSWarning, NothingToZoomWarning, quiet
from geo_hires.evaluate.scenes import labelled_scene
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import ModelCard, bundle_dir, update_card
from geo_hires.models.zoom_policy import (
    PolicySpec,
    ZoomPolicy,
    policy_features,
    save_policy,
    small_evidence,
)
from geo_hires.scene import Scene, open_scene
from geo_hires.train.gsd import at_gsd, scaled_truth
from geo_hires.train.zoom_replay import ImageReplay, record_images, window_gains

__all__ = [
    "ZoomTrainConfig",
    "calibrate_safety",
    "evaluate_choices",
    "fit_policy",
    "split_px",
    "table",
    "train_zoom_policy",
    "zoomable_gsds",
]

Replays = Sequence[tuple[ImageReplay, Scene]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZoomTrainConfig:
    """Reward weights, optimiser settings, and what the policy is trained and checked on.

    Attributes:
        window: Fine window side (fine-level pixels).
        grid: Evidence cells per window side (policy input).
        cost: Objects a zoomed window must recover to pay for itself.
        score_threshold: Detections that count towards recall.
        epochs, lr, seed: REINFORCE over all training windows per epoch (SGD, momentum 0.9).
        samples: Actions sampled per window per epoch (less variance per step).
        entropy: Weight of the policy's entropy in the objective (keeps it exploring).
        gsds: Ground sample distances (m) the training and validation images are recorded at
            (resampled from the card's GSD); ``()``: the images as they are.
        safety_recall: Share of the training windows' recall gain the safety rule alone must
            cover (``None``: no safety rule).
    """

    window: int = 512
    grid: int = 8
    cost: float = 0.2
    score_threshold: float = 0.2
    epochs: int = 150
    lr: float = 0.1
    seed: int = 0
    samples: int = 4
    entropy: float = 0.01
    gsds: tuple[float, ...] = ()
    safety_recall: float | None = 0.99

    def __post_init__(self) -> None:
        bad = [g for g in self.gsds if not g > 0]  # NaN too
        if bad:
            raise ConfigError(f"--gsds {bad[0]}: ground sample distances are metres, above 0")
        if self.epochs < 1 or self.samples < 1 or not self.lr > 0 or not self.cost >= 0:
            raise ConfigError("train-zoom: --epochs >= 1, samples >= 1, lr > 0, --cost >= 0")
        if self.safety_recall is not None and not 0 < self.safety_recall <= 1:
            raise ConfigError(f"--safety-recall {self.safety_recall}: a share, in (0, 1]")


POLICY_THREADS = 2
"""Torch threads while a policy trains (the shipped policies' 2-core machine's default)."""


def fit_policy(
    features: npt.NDArray[np.float32],
    gains: npt.NDArray[np.float64],
    cfg: ZoomTrainConfig,
    spec: PolicySpec,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[ZoomPolicy, list[dict[str, float]]]:
    """REINFORCE with a self-critical baseline over all windows; returns the policy and its
    curve (every 20 epochs: greedy reward per window, zoom share, recall gain kept). Torch
    runs :data:`POLICY_THREADS` threads (a step's sums follow the thread count: the weights
    would otherwise be the machine's)."""
    with torch_threads(POLICY_THREADS):
        torch.manual_seed(cfg.seed)
        policy = ZoomPolicy(spec)
        # SGD, not Adam: zoom-worthy windows are few (~8 % on the aircraft data), and Adam's
        # equal-sized steps let the shared bias outrun the weights that single them out (measured:
        # Adam collapsed to zooming nothing); the entropy bonus keeps both actions sampled
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr, momentum=0.9)
        x = torch.from_numpy(features)
        value = torch.from_numpy(gains).float() - cfg.cost  # reward of zooming; not zooming: 0
        gen = torch.Generator().manual_seed(cfg.seed)
        curve: list[dict[str, float]] = []
        total_gain = float(np.clip(gains, 0, None).sum()) or 1.0
        for epoch in range(cfg.epochs):
            policy.train()
            p = torch.sigmoid(policy(x))
            greedy = (p.detach() >= 0.5).float()
            action = torch.bernoulli(p.detach().expand(cfg.samples, -1), generator=gen)
            advantage = (action - greedy) * value  # r(sampled) - r(greedy), per window
            logp = action * torch.log(p + 1e-8) + (1 - action) * torch.log(1 - p + 1e-8)
            entropy = -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8))
            loss = -(advantage * logp).mean() - cfg.entropy * entropy.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch % 20 == 0 or epoch == cfg.epochs - 1:
                g = greedy.numpy().astype(bool)
                row = {
                    "epoch": epoch,
                    "reward_per_window": round(float((greedy * value).mean()), 4),
                    "zoom_fraction": round(float(g.mean()), 4),
                    "gain_kept": round(float(np.clip(gains[g], 0, None).sum()) / total_gain, 4),
                }
                curve.append(row)
                if on_epoch is not None:
                    on_epoch(epoch, row)
        return policy.eval(), curve


def split_px(card: ModelCard) -> float:
    """Box side (level-0 pixels at the card's GSD) under which the coarsest level does not
    report a peak: what only the fine pass can deliver."""
    coarse = max(card.levels, key=lambda r: r.target_gsd_m)
    return float(coarse.min_size * max(1, round(coarse.target_gsd_m / card.gsd_m)))


def evaluate_choices(
    replays: Replays,
    card: ModelCard,
    choices: Sequence[npt.NDArray[np.bool_]],
) -> dict[str, float]:
    """AP50, AP50:95 and the share of fine windows/pixels of one decision per image."""
    from geo_hires.evaluate import evaluate_images

    cfg = DetectConfig(score_threshold=0.05)
    pairs = [
        (r.detections(c, card, s, cfg), r.truth) for (r, s), c in zip(replays, choices, strict=True)
    ]
    res = evaluate_images(pairs).overall
    area = [(r.cores[:, 2] - r.cores[:, 0]) * (r.cores[:, 3] - r.cores[:, 1]) for r, _ in replays]
    zoomed = sum(float(a[c].sum()) for a, c in zip(area, choices, strict=True))
    return {
        "ap50": round(res.ap50, 4),
        "ap50_95": round(res.ap50_95, 4),
        "fine_windows_fraction": round(
            sum(int(c.sum()) for c in choices) / max(1, sum(len(c) for c in choices)), 4
        ),
        "fine_pixels_fraction": round(zoomed / max(1.0, sum(float(a.sum()) for a in area)), 4),
    }


def _features(replays: Replays, card: ModelCard, spec: PolicySpec) -> list[npt.NDArray[np.float32]]:
    return [
        policy_features(r.evidence, r.cores, spec.grid, spec.split_for(card.gsd_m, s.gsd_m))
        for r, s in replays
    ]


def table(
    replays: Replays, card: ModelCard, cfg: ZoomTrainConfig, spec: PolicySpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Features and gains of every window of the recorded images."""
    feats = _features(replays, card, spec)
    gains = [window_gains(r, card, s, cfg.score_threshold) for r, s in replays]
    return np.concatenate(feats), np.concatenate(gains)


def calibrate_safety(features: npt.NDArray[np.float32], gains: npt.NDArray[np.float64],
                     grid: int, recall: float) -> float:  # fmt: skip
    """The highest small-evidence score whose windows (those at or above it) hold ``recall``
    of the positive recall gain; 1.0 (never forced) when no window gains anything."""
    strongest = small_evidence(features, grid)
    positive = np.clip(gains, 0, None)
    total = float(positive.sum())
    if total <= 0:
        return 1.0
    order = np.argsort(-strongest, kind="stable")
    covered = np.cumsum(positive[order]) / total
    i = int(np.searchsorted(covered, recall - 1e-12))
    return float(strongest[order][min(i, len(order) - 1)])


def _check_safety(safe: float, features: npt.NDArray[np.float32], cfg: ZoomTrainConfig) -> None:
    """Warn when the safety rule alone zooms every training window: the policy then decides
    nothing, and ``--zoom rl`` costs what ``all`` does."""
    if len(features) and bool((small_evidence(features, cfg.grid) >= safe).all()):
        warnings.warn(
            f"the safety rule (--safety-recall {cfg.safety_recall:g}) forces every training "
            f"window (score {safe:g}: some recall gain lies in windows without small-object "
            "evidence), so --zoom rl will zoom them all; lower --safety-recall, or give 0 for "
            "no safety rule",
            NothingToZoomWarning,
            stacklevel=3,
        )


def _items(
    names: Sequence[str], images: str, labels: str, card: ModelCard, gsds: Sequence[float],
    work: Path,
) -> list[tuple[str, PixelDetections]]:  # fmt: skip
    """``(scene path, truth)`` of each named image, at each GSD (resampled copies in ``work``)."""
    out = []
    for name in names:
        path = str(Path(images) / name)
        scene, truth = labelled_scene(path, labels, card, class_names=card.classes)
        if not gsds:
            out.append((path, truth))
        for g in gsds:  # from the image's own GSD where its CRS gives one, else the data's
            copy = work / f"{g:g}m" / f"{Path(name).stem}.tif"
            factor = at_gsd(path, g, copy, native=scene.gsd_m or card.gsd_m)
            out.append((str(copy), scaled_truth(truth, factor)))
    return out


def zoomable_gsds(
    gsds: Sequence[float], card: ModelCard, sample: str, work: Path
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(kept, skipped)``: the GSDs at which the bundle scans a coarse and a fine level (at
    the others its levels fold into one or the fine one is skipped, so no window can be
    zoomed: nothing to learn or to score there). ``sample`` is one image, resampled to each."""
    kept: list[float] = []
    skipped: list[float] = []
    for g in gsds:
        copy = work / "probe" / f"{g:g}m.tif"
        with quiet(NoCRSWarning):  # training images without a CRS are the rule
            at_gsd(sample, g, copy, native=open_scene(sample).gsd_m or card.gsd_m)
            zooms = coarsest(card, open_scene(str(copy)), DetectConfig()) is not None
        (kept if zooms else skipped).append(g)
    return tuple(kept), tuple(skipped)


def _validation(val: Replays, card: ModelCard, policy: ZoomPolicy, cfg: ZoomTrainConfig,
                ) -> dict[str, dict[str, float]]:  # fmt: skip
    """The policy's greedy decisions (with its safety rule) on held-out images against all,
    none and random choices of the same share, per GSD."""
    out: dict[str, dict[str, float]] = {}
    by_gsd: dict[str, list[tuple[ImageReplay, Scene]]] = {}
    for r, s in val:
        by_gsd.setdefault(f"{s.gsd_m or card.gsd_m:.2f}", []).append((r, s))
    for gsd, group in sorted(by_gsd.items()):
        feats = _features(group, card, policy.spec)
        rl = [policy.decide(f) for f in feats]
        share = sum(int(c.sum()) for c in rl) / max(1, sum(len(c) for c in rl))
        rng = np.random.default_rng(cfg.seed)
        rows = {
            "rl": evaluate_choices(group, card, rl),
            "all": evaluate_choices(group, card, [np.ones(len(c), bool) for c in rl]),
            "none": evaluate_choices(group, card, [np.zeros(len(c), bool) for c in rl]),
            "random_same_share": evaluate_choices(group, card,
                                                  [rng.random(len(c)) < share for c in rl]),
        }  # fmt: skip
        out.update({f"{gsd}m/{k}": v for k, v in rows.items()})
    return out


def _split(bundle: str, card: ModelCard) -> tuple[list[str], list[str]]:
    train, val = card.train_images, card.val_images
    if not train or not val:
        raise ConfigError(
            f"{bundle}: its card names no train/validation split ('training.train_images', "
            "'training.val_images'); train-zoom learns on the former and scores on the latter"
        )
    return list(train), list(val)


def _zoomable(
    bundle: str, cfg: ZoomTrainConfig, card: ModelCard, sample: str, work: Path,
    log: Callable[[str], None],
) -> tuple[ZoomTrainConfig, tuple[float, ...]]:  # fmt: skip
    """``cfg`` with only the GSDs at which the bundle zooms, and those it leaves out (said)."""
    gsds, skipped = zoomable_gsds(cfg.gsds, card, sample, work)
    if skipped:
        names = ", ".join(f"{g:g} m" for g in skipped)
        log(f"skipping GSD {names}: the bundle scans one level there (its levels fold or the "
            "fine one is skipped), so no window can be zoomed")  # fmt: skip
    if cfg.gsds and not gsds:
        raise ConfigError(
            f"{bundle} scans one level at every GSD of --gsds; give GSDs at which it scans two "
            f"(finer than the coarse level's, {card.gsd_m:g} m × its downsample)"
        )
    return dataclasses.replace(cfg, gsds=gsds), skipped


def train_zoom_policy(
    bundle: str,
    images: str,
    labels: str,
    out: str,
    cfg: ZoomTrainConfig,
    *,
    log: Callable[[str], None] = lambda _s: None,
) -> dict[str, object]:
    """Record the bundle's training images (at ``cfg.gsds``), fit the policy, calibrate its
    safety rule, score it on the validation images (never trained on, at the same GSDs), and
    write it into ``out`` (a copy of the bundle, or the bundle itself).

    Returns the record written to the card (``zoom_training``).
    """
    model = load_bundle(bundle)
    card = model.card
    train_names, val_names = _split(bundle, card)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="geo-hires-zoom-") as tmp:
        work = Path(tmp)
        cfg, skipped = _zoomable(bundle, cfg, card, str(Path(images) / train_names[0]), work, log)
        items = _items(train_names, images, labels, card, cfg.gsds, work)
        train = record_images(items, model, cfg.window, log)
        log(f"recorded {len(train)} training scenes in {time.perf_counter() - start:.0f} s")
        spec = PolicySpec(window=cfg.window, grid=cfg.grid, detector=model.fcn_digest,
                          split_px=split_px(card))  # fmt: skip
        feats, gains = table(train, card, cfg, spec)
        policy, curve = fit_policy(feats, gains, cfg, spec)
        if cfg.safety_recall is not None:
            safe = calibrate_safety(feats, gains, cfg.grid, cfg.safety_recall)
            _check_safety(safe, feats, cfg)
            policy = policy.with_spec(dataclasses.replace(spec, safe_score=safe))
        val = record_images(_items(val_names, images, labels, card, cfg.gsds, work), model,
                            cfg.window, log)  # fmt: skip
        validation = _validation(val, card, policy, cfg)
    record = {
        "data": labels, "train_scenes": len(train), "val_scenes": len(val),
        "gsds": list(cfg.gsds), "skipped_gsds": list(skipped), "windows": len(gains),
        "config": dataclasses.asdict(cfg),
        "safe_score": policy.spec.safe_score, "curve": curve, "validation": validation,
        "seconds": round(time.perf_counter() - start, 1), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    _write(bundle, out, policy, record, cfg, curve)
    return record


def _write(bundle: str, out: str, policy: ZoomPolicy, record: dict[str, object],
           cfg: ZoomTrainConfig, curve: list[dict[str, float]]) -> None:  # fmt: skip
    target = Path(out)
    src = bundle_dir(bundle)
    if target.resolve() != src.resolve():
        shutil.copytree(src, target, dirs_exist_ok=True)
    save_policy(target, policy)
    update_card(target, {"zoom_policy": "zoom.pt", "zoom_training": record})
    spec_doc = json.loads((target / "zoom.pt.json").read_text())
    spec_doc["extra"] = {"cost": cfg.cost, "curve": curve}
    (target / "zoom.pt.json").write_text(json.dumps(spec_doc, indent=2, sort_keys=True) + "\n")
