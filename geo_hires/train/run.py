"""``geo-hires train``: chips → fit → folded bundle with a model card (and validation metrics)."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geo_hires.errors import ConfigError, option
from geo_hires.models.arch import ArchSpec, lsn_spec, wide_spec
from geo_hires.models.bundle import save_bundle
from geo_hires.models.card import Level, ModelCard, save_card
from geo_hires.models.fcn import FCNDetector
from geo_hires.train.chips import (
    ChipSampler,
    LabelledImage,
    load_labelled,
    resampled,
    split_by_image,
)
from geo_hires.train.fit import FitConfig, FitReport, StoppedEarly, fit

__all__ = ["AIRCRAFT_LEVELS", "TrainJob", "train_bundle"]

AIRCRAFT_LEVELS = (
    Level(name="full", target_gsd_m=0.5, downsample=1, max_size=80.0),
    Level(name="coarse", target_gsd_m=1.0, downsample=2, min_size=32.0),
)
"""Two YOLT levels for aircraft at 0.5 m (labelled boxes span ~37-217 px): boxes under 80 px
come from full resolution, boxes over 64 px from half resolution, where they are 32-110 px and
fit the network's 127 px receptive field. The overlap (64-80 px) is resolved by NMS."""

ARCHS: Mapping[str, Callable[[int], ArchSpec]] = {"lsn": lsn_spec, "wide": wide_spec}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainJob:
    """Everything ``geo-hires train`` needs.

    Attributes:
        scenes: Training scene files (split by image into train/validation).
        labels: One label file for all scenes or a folder of per-scene files.
        out: Bundle folder to write.
        name: Model name (goes into every detection's ``model``).
        arch: ``lsn`` or ``wide``.
        gsd_m: Ground sample distance of the training imagery.
        class_map: Class renames applied to the labels.
        val_fraction: Share of images held out for validation (never trained on).
        val_scenes: Validation scene files named outright (YOLO training): then every scene
            of ``scenes`` is a training image and ``val_fraction`` is not used.
        fit: Optimiser settings.
        sampler: Chip settings.
        levels: The level plan written to the card; ``None``: :data:`AIRCRAFT_LEVELS` moved to
            ``gsd_m`` (the full level at the data's GSD, the coarse at twice it; sizes are in
            level pixels, so they hold at any GSD).
        licence: Licence the weights inherit from the data.
    """

    scenes: tuple[str, ...]
    labels: str
    out: str
    name: str
    arch: str = "lsn"
    gsd_m: float = 0.5
    class_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.15
    val_scenes: tuple[str, ...] = ()
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    sampler: ChipSampler = dataclasses.field(default_factory=ChipSampler)
    levels: tuple[Level, ...] | None = None
    licence: str = "see training data"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gsd_m) and self.gsd_m > 0):
            raise ConfigError(f"--gsd {self.gsd_m}: metres per pixel of the data, above 0")
        if not self.plan:
            raise ConfigError("TrainJob.levels: at least one level (None: the aircraft plan)")
        finest = min(lv.target_gsd_m for lv in self.plan)
        if abs(finest / self.gsd_m - 1) > 0.05:
            raise ConfigError(
                f"the finest level runs at {finest:g} m but the data is at {self.gsd_m:g} m: "
                "the network would never see objects at the size it learnt them"
            )

    @property
    def plan(self) -> tuple[Level, ...]:
        """The levels the card gets (see ``levels``)."""
        if self.levels is not None:
            return self.levels
        f = self.gsd_m / AIRCRAFT_LEVELS[0].target_gsd_m
        return tuple(
            dataclasses.replace(lv, target_gsd_m=lv.target_gsd_m * f) for lv in AIRCRAFT_LEVELS
        )


Evaluator = Callable[[str, Sequence[str], str], dict[str, Any]]


def train_bundle(
    job: TrainJob,
    *,
    evaluate: Evaluator | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> ModelCard:
    """Train, fold and save a bundle; then score it on the validation split with ``evaluate``.

    ``evaluate(bundle_dir, val_scene_paths, labels)`` runs the real detection pipeline (the CLI
    passes one), so the card's metrics are those a user gets from ``geo-hires detect``.
    Interrupted (Ctrl-C, SIGTERM) after a first step, the model so far is saved, its card's
    report ``interrupted`` and without metrics, and the interrupt goes on.
    """
    if job.val_scenes:
        raise ConfigError("validation scenes by name are for YOLO training; use --val-fraction")
    items, classes = load_labelled(job.scenes, job.labels, class_map=job.class_map, gsd_m=job.gsd_m)
    train, val = split_by_image(items, val_fraction=job.val_fraction, seed=job.fit.seed)
    log(
        f"train: {len(train)} images / {sum(len(i.boxes) for i in train)} boxes; "
        f"val: {len(val)} images"
    )
    spec = ARCHS[job.arch](len(classes))

    def on_step(step: int, loss: float) -> None:
        if step % 100 == 0:
            log(f"step {step} loss {loss:.3f}")

    try:
        model, report = fit(spec, train, sampler=job.sampler, config=job.fit, on_step=on_step)
    except StoppedEarly as stop:
        card = _card(job, spec, classes, (items, train, val), stop.report)
        kept = _keep_interrupted(Path(job.out), stop.model, card)
        log(
            f"interrupted after {stop.report.steps} of {job.fit.steps} steps: the model so far "
            f"is in {kept} (its card says so; not scored)"
        )
        raise stop.__cause__ or stop from None
    if report.lr_at_end > 0.05:
        log(
            f"training stopped by its time budget at step {report.steps} of {job.fit.steps}, "
            f"its learning rate still {report.lr_at_end:.0%} of its peak (not annealed): give "
            f"{option('--steps', report.steps, api='FitConfig.steps')} or fewer for this "
            f"budget here, or more {option('--minutes', api='FitConfig.minutes')}"
        )
    card = _card(job, spec, classes, (items, train, val), report)
    save_bundle(job.out, model, card)
    if evaluate is not None and val:
        by_name = {Path(p).name: p for p in job.scenes}
        metrics = evaluate(job.out, [by_name[i.name] for i in val], job.labels)
        card = dataclasses.replace(card, extra={**card.extra, "metrics": metrics})
        save_card(job.out, card)
    return card


def _keep_interrupted(out: Path, model: FCNDetector, card: ModelCard) -> Path:
    """Save an interrupted run's model, whole or not at all, and never over anything.

    In ``out`` where it is empty or absent, else in ``OUT.interrupted`` beside it (a retrain
    stopped early replaced a good bundle with its first steps), replacing an earlier
    interrupted bundle there. Written in a temporary folder beside and renamed into place, so a
    second interrupt while saving leaves no half-written bundle (its weights new, its card old)
    and at worst that temporary folder, which is what is kept where the place is taken.
    """
    target = out if _vacant(out) else out.with_name(out.name + ".interrupted")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    save_bundle(staging, model, card)
    if not _vacant(target):
        if not (target / "card.json").is_file():  # somebody's folder: not ours to replace
            return staging
        shutil.rmtree(target)  # an earlier interrupted run's bundle
    elif target.exists():
        target.rmdir()
    os.replace(staging, target)
    return target


def _vacant(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def _card(
    job: TrainJob,
    spec: ArchSpec,
    classes: tuple[str, ...],
    split: tuple[Sequence[LabelledImage], Sequence[LabelledImage], Sequence[LabelledImage]],
    report: FitReport,
) -> ModelCard:
    """The card of a trained network: how it was trained (command, split, settings, report);
    ``split``: every image, the training ones, the validation ones."""
    items, train, val = split
    extra: dict[str, Any] = {
        "licence": job.licence,
        "training": {
            "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "",
            "data": job.labels,
            "train_images": [i.name for i in train],
            "val_images": [i.name for i in val],
            "resampled": resampled(items),
            "class_map": dict(job.class_map),
            "fit": dataclasses.asdict(job.fit),
            "sampler": dataclasses.asdict(job.sampler),
            "report": dataclasses.asdict(report),
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    return ModelCard(
        name=job.name,
        arch=spec,
        classes=classes,
        gsd_m=job.gsd_m,
        levels=job.plan,
        score_threshold=0.3,
        extra=extra,
    )
