"""Train a fully convolutional CenterNet detector on chips (focal loss, seeded, time-boxed)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geo_hires.errors import ConfigError
from geo_hires.models.arch import ArchSpec
from geo_hires.models.codec import encode_targets
from geo_hires.models.fcn import FCNDetector
from geo_hires.train.chips import ChipSampler, LabelledImage

__all__ = ["FitConfig", "FitReport", "StoppedEarly", "centernet_loss", "fit", "lr_factor"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig:
    """Training settings.

    Attributes:
        steps: Optimiser steps (upper bound).
        minutes: Wall-clock budget; training stops at whichever comes first.
        batch_size: Chips per step.
        lr: Peak AdamW learning rate (warm-up over the first 5 % of ``steps``, then cosine
            decay to 0 at ``steps``: a run that ``minutes`` ends first is not annealed, and
            says so in its report's ``lr_at_end``).
        seed: Seeds chips, augmentation and initial weights.
        threads: Torch CPU threads (ultralytics-style libraries reset this; we set it).
    """

    steps: int = 3000
    minutes: float = 25.0
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.minutes <= 0 or self.lr <= 0:
            raise ConfigError("FitConfig: steps, batch_size, minutes and lr must be positive")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitReport:
    """What happened during training."""

    steps: int
    seconds: float
    final_loss: float
    device: str
    chips_seen: int
    interrupted: bool = False
    lr_at_end: float = 0.0
    """The learning rate's share of its peak when training ended: above 0 where the time
    budget or an interrupt ended it before the schedule did."""


class StoppedEarly(KeyboardInterrupt):
    """Training interrupted after some steps; ``model`` and ``report`` are what it had.

    A ``KeyboardInterrupt`` still (a caller that does not keep the model stops as before);
    the interrupt itself (Ctrl-C's, or the CLI's SIGTERM) is its ``__cause__``."""

    def __init__(self, model: FCNDetector, report: FitReport) -> None:
        super().__init__(f"training interrupted after {report.steps} steps")
        self.model, self.report = model, report


def centernet_loss(
    out: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmap plus L1 on size and offset.

    Args:
        out: ``(B, C + 4, H, W)`` network output (heatmap logits first).
        heat: ``(B, C, H, W)`` Gaussian targets (1 at centres).
        reg: ``(B, 4, H, W)`` log w, log h, dx, dy targets.
        mask: ``(B, H, W)`` 1 at centres.
    """
    c = heat.shape[1]
    logits = out[:, :c]
    pos = heat.ge(0.999).float()
    log_p, log_1p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = (log_p * (1 - p) ** 2 * pos).sum()
    neg_loss = (log_1p * p**2 * (1 - heat) ** 4 * (1 - pos)).sum()
    n = pos.sum().clamp(min=1.0)
    focal = -(pos_loss + neg_loss) / n
    m = mask[:, None]
    l1 = (torch.abs(out[:, c:] - reg) * m).sum() / (m.sum() * 4).clamp(min=1.0)
    return focal + l1


def _batch(
    items: Sequence[LabelledImage],
    sampler: ChipSampler,
    spec: ArchSpec,
    rng: np.random.Generator,
    n: int,
) -> tuple[torch.Tensor, ...]:
    imgs, heats, regs, masks = [], [], [], []
    out_hw = (math.ceil(sampler.chip / spec.stride),) * 2
    for _ in range(n):
        img, boxes, classes = sampler.sample(items[int(rng.integers(len(items)))], rng)
        t = encode_targets(
            boxes, classes, out_hw=out_hw, num_classes=spec.num_classes, stride=spec.stride
        )
        imgs.append(img)
        heats.append(torch.from_numpy(t["heat"]))
        regs.append(torch.from_numpy(t["reg"]))
        masks.append(torch.from_numpy(t["mask"]))
    return torch.stack(imgs), torch.stack(heats), torch.stack(regs), torch.stack(masks)


def lr_factor(step: int, steps: int) -> float:
    """The learning rate's share of its peak after ``step`` of ``steps``: linear warm-up over
    the first 5 %, then cosine decay to 0.

    By steps alone, not the clock: a seeded run is the same run on any machine (the shipped
    bundles' commands reproduce them); a budget that ends it early is reported instead."""
    warm = max(1, steps // 20)
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def fit(
    spec: ArchSpec,
    items: Sequence[LabelledImage],
    *,
    sampler: ChipSampler,
    config: FitConfig,
    device: torch.device | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[FCNDetector, FitReport]:
    """Train ``spec`` on chips from ``items``; returns the (unfolded) model and a report.

    Raises:
        StoppedEarly: Ctrl-C or SIGTERM after at least one step: the model as the interrupt
            found it and its report (``interrupted``) ride along, for the caller to keep (a
            20-minute run was lost at its last second). Before a first step, the interrupt
            itself.
    """
    if not items:
        raise ConfigError("no training images")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = FCNDetector(spec).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    start, budget = time.monotonic(), config.minutes * 60
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, config.steps))
    loss_avg, done, stop = float("nan"), 0, None
    try:
        for step in range(1, config.steps + 1):
            loss_avg = _step(model, opt, items, (sampler, spec, rng, config), loss_avg, device)
            sched.step()
            done = step
            if on_step is not None:
                on_step(step, loss_avg)
            if time.monotonic() - start > budget:
                break
    except KeyboardInterrupt as exc:
        if not done:
            raise
        stop = exc
    report = FitReport(
        steps=done,
        seconds=round(time.monotonic() - start, 1),
        final_loss=round(loss_avg, 4),
        device=str(device),
        chips_seen=done * config.batch_size,
        interrupted=stop is not None,
        lr_at_end=round(lr_factor(done, config.steps), 3),
    )
    if stop is not None:
        raise StoppedEarly(model.cpu().eval(), report) from stop
    return model.cpu().eval(), report


def _step(
    model: FCNDetector,
    opt: torch.optim.Optimizer,
    items: Sequence[LabelledImage],
    draw: tuple[ChipSampler, ArchSpec, np.random.Generator, FitConfig],
    loss_avg: float,
    device: torch.device,
) -> float:
    """One optimiser step on a fresh batch; the loss's running average after it."""
    sampler, spec, rng, config = draw
    x, heat, reg, mask = (
        t.to(device) for t in _batch(items, sampler, spec, rng, config.batch_size)
    )
    loss = centernet_loss(model(x.contiguous(memory_format=torch.channels_last)), heat, reg, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    return loss.item() if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss.item()
