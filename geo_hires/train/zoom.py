"""``geo-hires train-zoom``: a zoom policy learned with REINFORCE from replayed detections.

Why replay: a policy's decision on a window only changes which detections the run keeps, so
both passes run once per training image (the coarse level everywhere, the fine level on every
window, one window per unit) and every later decision is a lookup. The reward of zooming a
window is the *recall gain* of its fine pass over the coarse pass there — truth objects centred
in the window found (IoU >= 0.5, score >= the threshold) with the fine detections merged in,
minus those found without — less a ``cost`` per zoomed window (in objects: zooming pays when it
finds more than ``cost`` objects). Windows are independent under this reward, so each is a
one-step Bernoulli bandit; REINFORCE uses the self-critical baseline (the reward of the policy's
own greedy decision), which needs no value network, plus a small entropy bonus.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torchvision

from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.levels import coarsest
from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.plan import plan_units
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.merge import merge_results
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.models.card import ModelCard, bundle_dir
from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy, policy_features, save_policy
from geo_hires.scene import Scene

__all__ = [
    "ImageReplay",
    "ZoomTrainConfig",
    "evaluate_choices",
    "fit_policy",
    "record_image",
    "split_px",
    "train_zoom_policy",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZoomTrainConfig:
    """Reward weights and optimiser settings.

    Attributes:
        window: Fine window side (fine-level pixels).
        grid: Evidence cells per window side (policy input).
        cost: Objects a zoomed window must recover to pay for itself.
        score_threshold: Detections that count towards recall.
        epochs, lr, seed: REINFORCE over all training windows per epoch (SGD, momentum 0.9).
        samples: Actions sampled per window per epoch (less variance per step).
        entropy: Weight of the policy's entropy in the objective (keeps it exploring).
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


def _found(dets: PixelDetections, truth: npt.NDArray[np.float64], thr: float) -> int:
    keep = dets.scores >= thr
    if not len(truth) or not keep.any():
        return 0
    iou = torchvision.ops.box_iou(torch.from_numpy(truth), torch.from_numpy(dets.boxes[keep]))
    return int((iou.amax(dim=1) >= 0.5).sum())


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


def fit_policy(
    features: npt.NDArray[np.float32],
    gains: npt.NDArray[np.float64],
    cfg: ZoomTrainConfig,
    spec: PolicySpec,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[ZoomPolicy, list[dict[str, float]]]:
    """REINFORCE with a self-critical baseline over all windows; returns the policy and its
    curve (every 20 epochs: greedy reward per window, zoom share, recall gain kept)."""
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


def table(
    replays: Sequence[tuple[ImageReplay, Scene]], card: ModelCard, cfg: ZoomTrainConfig
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Features and gains of every window of the recorded images."""
    split = split_px(card)
    feats = [policy_features(r.evidence, r.cores, cfg.grid, split) for r, _ in replays]
    gains = [window_gains(r, card, s, cfg.score_threshold) for r, s in replays]
    return np.concatenate(feats), np.concatenate(gains)


def _record_all(
    paths: Sequence[str], labels: str, model: Bundle, card: ModelCard, window: int
) -> list[tuple[ImageReplay, Scene]]:
    from geo_hires.evaluate.scenes import labelled_scene

    out = []
    for path in paths:
        scene, truth = labelled_scene(path, labels, card, class_names=card.classes)
        out.append((record_image(scene, model, card, truth, window), scene))
    return out


def evaluate_choices(
    replays: Sequence[tuple[ImageReplay, Scene]],
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


def _validation(
    val: Sequence[tuple[ImageReplay, Scene]],
    card: ModelCard,
    policy: ZoomPolicy,
    cfg: ZoomTrainConfig,
) -> dict[str, dict[str, float]]:
    """The policy's greedy decisions on held-out images against all, none and random choices
    of the same share."""
    probs = [
        policy.probabilities(policy_features(r.evidence, r.cores, cfg.grid, policy.spec.split_px))
        for r, _ in val
    ]
    rl = [p >= 0.5 for p in probs]
    rng = np.random.default_rng(cfg.seed)
    share = sum(int(c.sum()) for c in rl) / max(1, sum(len(c) for c in rl))
    return {
        "rl": evaluate_choices(val, card, rl),
        "all": evaluate_choices(val, card, [np.ones(len(p), bool) for p in probs]),
        "none": evaluate_choices(val, card, [np.zeros(len(p), bool) for p in probs]),
        "random_same_share": evaluate_choices(
            val, card, [rng.random(len(p)) < share for p in probs]
        ),
    }  # fmt: skip


def train_zoom_policy(
    bundle: str,
    images: str,
    labels: str,
    out: str,
    cfg: ZoomTrainConfig,
    *,
    log: Callable[[str], None] = lambda _s: None,
) -> dict[str, object]:
    """Record the bundle's training images, fit the policy, score it on the validation images
    (never trained on), and write it into ``out`` (a copy of the bundle, or the bundle itself).

    Returns the record written to the card (``zoom_training``).
    """
    model = load_bundle(bundle)
    card = model.card
    split = card.extra.get("training", {})
    train_names, val_names = split.get("train_images", []), split.get("val_images", [])
    if not train_names or not val_names:
        raise ConfigError(
            f"{bundle}: its card names no train/validation split ('training.train_images', "
            "'training.val_images'); train-zoom learns on the former and scores on the latter"
        )
    start = time.perf_counter()
    train = _record_all([str(Path(images) / n) for n in train_names], labels, model, card,
                        cfg.window)  # fmt: skip
    log(f"recorded {len(train)} training images in {time.perf_counter() - start:.0f} s")
    feats, gains = table(train, card, cfg)
    spec = PolicySpec(
        window=cfg.window, grid=cfg.grid, detector=model.fcn_digest, split_px=split_px(card)
    )
    policy, curve = fit_policy(feats, gains, cfg, spec)
    val = _record_all([str(Path(images) / n) for n in val_names], labels, model, card, cfg.window)
    record = {
        "data": labels, "train_images": len(train), "val_images": len(val),
        "windows": len(gains), "config": dataclasses.asdict(cfg), "curve": curve,
        "validation": _validation(val, card, policy, cfg),
        "seconds": round(time.perf_counter() - start, 1),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    target = Path(out)
    src = bundle_dir(bundle)
    if target.resolve() != src.resolve():
        shutil.copytree(src, target, dirs_exist_ok=True)
    save_policy(target, policy)
    doc = json.loads((target / "card.json").read_text())
    doc["zoom_policy"] = "zoom.pt"
    doc["zoom_training"] = record
    (target / "card.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    spec_doc = json.loads((target / "zoom.pt.json").read_text())
    spec_doc["extra"] = {"cost": cfg.cost, "curve": curve}
    (target / "zoom.pt.json").write_text(json.dumps(spec_doc, indent=2, sort_keys=True) + "\n")
    return record
