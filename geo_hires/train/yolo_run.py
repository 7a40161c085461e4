"""``geo-hires train --arch yolov8n|yolo11n``: labelled scenes → an ultralytics bundle.

Why 256-px chips: on two CPU cores YOLOv8n trains ~2.4 full 640-px chips per second, so an
hour is ~9 epochs and useful accuracy is out of reach; on 256-px crops around objects (with
jitter and background crops, :mod:`geo_hires.train.yolo_data`) it trains ~6.5x more chips per
second, and a fully convolutional detector trained on crops runs on larger windows unchanged
(``bench/yolo_refiner_probe.py``). The same weights then serve a whole-scene level (windows of
``window`` pixels with ``halo`` overlap) and a cascade's refiner (windows around candidates).

Training is ultralytics' own (from the architecture yaml: no pretrained weights can be
downloaded offline), time-boxed with its ``time`` argument, seeded, on the CPU unless a device
is given; the card's metrics are ours, through the real detect pipeline, on images never
trained on.

Three sets of images, all split by whole image: ultralytics trains on chips of the *fit* images
and picks its best epoch on chips of the *select* images (both from the job's training images,
:func:`split_fit_select`); the job's *validation* images are used once, at the end, for the
card's metrics, and for nothing that chose the weights.

Resumable: given a ``work`` folder (``geo-hires train --work DIR``), the chips, ultralytics'
run and a record of what the folder trains stay there. Running the same command again after a
kill resumes from the run's ``last.pt`` (ultralytics' ``resume``: same optimiser state, same
epoch plan), reuses the chips, and after a finished run only writes and scores the bundle.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_hires.errors import ConfigError
from geo_hires.models.card import Level, ModelCard, save_card
from geo_hires.models.yolo import ultralytics_env
from geo_hires.train.chips import LabelledImage, load_labelled, resampled, split_by_image
from geo_hires.train.run import Evaluator, TrainJob
from geo_hires.train.yolo_data import YoloDataConfig, chip_dataset, dataset_record
from geo_hires.train.yolo_sources import YOLO_ARCHS, check_init, yolo_weights

__all__ = ["YoloTrainConfig", "split_fit_select", "train_yolo_bundle"]

WEIGHTS = "yolo.pt"
#: How a warm start (``--init``) trains on: SGD at a fifth of ultralytics' default rate, one
#: warm-up epoch. At the default (0.01, three warm-up epochs) the first 80-minute warm start
#: fell from select mAP50-95 0.649 to 0.565 in two epochs and spent ten winning it back.
FINE_TUNE: dict[str, Any] = {"optimizer": "SGD", "lr0": 0.002, "warmup_epochs": 1.0}


@dataclasses.dataclass(frozen=True, kw_only=True)
class YoloTrainConfig:
    """ultralytics training settings and the level the bundle's card declares.

    Attributes:
        arch: One of :data:`YOLO_ARCHS` (built from its yaml).
        minutes: Wall-clock budget of ultralytics' training loop.
        batch: Chips per step.
        data: The chip dataset (size, count, seed).
        window: Window side of the whole-scene level (level pixels, the ``imgsz``).
        halo: Overlap on each side of those windows (objects up to ``2 * halo`` px are whole).
        score_threshold: The card's default confidence threshold.
        device: torch device string for training (``cpu``, ``0``...).
        select_fraction: Share of the training images (by image) whose chips ultralytics
            validates on to pick its best epoch; the rest are fitted.
        init: A YOLO weights file to start from instead of the architecture's random
            initialisation (:func:`yolo_weights` finds it in a bundle): more epochs for the
            same budget, which is what tightens the boxes on a CPU.
    """

    arch: str = "yolov8n"
    minutes: float = 50.0
    batch: int = 16
    data: YoloDataConfig = dataclasses.field(default_factory=YoloDataConfig)
    window: int = 512
    halo: int = 112
    score_threshold: float = 0.25
    device: str = "cpu"
    select_fraction: float = 0.15
    init: str | None = None

    @property
    def oriented(self) -> bool:
        """Whether the architecture predicts oriented boxes (an ``-obb`` model)."""
        return self.arch.endswith("-obb")

    def __post_init__(self) -> None:
        if self.arch not in YOLO_ARCHS:
            raise ConfigError(f"--arch {self.arch!r}: choose one of {', '.join(YOLO_ARCHS)}")
        if self.minutes <= 0 or self.batch < 1:
            raise ConfigError("YOLO training: minutes > 0 and batch >= 1")
        if not 0 < self.select_fraction < 1:
            raise ConfigError("YOLO training: 0 < select_fraction < 1")


def split_fit_select(
    train: Sequence[LabelledImage], *, select_fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """The training images split again, seeded and by image, into (fit, select): ultralytics
    fits the first and picks its best epoch on the second, so no validation image chooses."""
    fit, select = split_by_image(train, val_fraction=select_fraction, seed=seed)
    if not fit or not select:
        raise ConfigError(
            f"YOLO training needs at least 2 training images to fit on some and pick the best "
            f"epoch on others; got {len(train)}"
        )
    return fit, select


def _checkpoint_state(last: Path) -> str:
    """``none``, ``resumable`` (an interrupted run's ``last.pt``) or ``finished`` (ultralytics
    strips the optimiser from ``last.pt`` when a run ends). Call inside :func:`ultralytics_env`."""
    if not last.is_file():
        return "none"
    from ultralytics.utils.patches import torch_load

    ckpt = torch_load(last, map_location="cpu")
    resumable = ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None
    return "resumable" if resumable else "finished"


def _fit(
    data_yaml: Path, work: Path, cfg: YoloTrainConfig, seed: int, log: Callable[[str], None]
) -> tuple[Path, int, str]:
    """Train (or resume an interrupted run in ``work``) and return the best checkpoint by
    ultralytics' fitness on the select chips, the epochs trained and how the call started."""
    threads = torch.get_num_threads()
    weights = work / "runs" / "train" / "weights"
    try:
        with ultralytics_env(work / "ultralytics"):
            from ultralytics import YOLO

            state = _checkpoint_state(weights / "last.pt")
            if state == "finished":  # killed after training, before the bundle was written
                best = (
                    weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
                )
                return best, len(_results(work)), state
            if state == "resumable":
                log(f"resuming {weights / 'last.pt'}")
                model = YOLO(str(weights / "last.pt"))
                model.train(
                    resume=True, data=str(data_yaml), time=cfg.minutes / 60, device=cfg.device,
                    workers=0, plots=False,
                )  # fmt: skip
            else:  # from a .pt, ultralytics trains on from its weights
                model = YOLO(str(yolo_weights(cfg.init)) if cfg.init else f"{cfg.arch}.yaml")
                model.train(
                    data=str(data_yaml), imgsz=cfg.data.chip, epochs=1000, time=cfg.minutes / 60,
                    batch=cfg.batch, device=cfg.device, workers=0, amp=False, plots=False,
                    seed=seed, deterministic=True, project=str(work / "runs"), name="train",
                    exist_ok=True, verbose=False, val=True, **(FINE_TUNE if cfg.init else {}),
                )  # fmt: skip
            epochs = int(getattr(model.trainer, "epoch", -1)) + 1
            best = Path(getattr(model.trainer, "best", ""))
    finally:
        torch.set_num_threads(threads)
    if not best.is_file():
        raise ConfigError(f"ultralytics wrote no checkpoint under {work / 'runs'}")
    return best, epochs, state


def _results(work: Path) -> list[dict[str, float]]:
    """ultralytics' per-epoch rows (``results.csv``; a resumed run appends to it), the last
    row of each epoch kept (a kill between its metrics and its checkpoint repeats an epoch)."""
    path = work / "runs" / "train" / "results.csv"
    if not path.is_file():
        return []
    rows: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(path.read_text().splitlines()):
        values = {k.strip(): float(v) for k, v in row.items() if k and v and v.strip()}
        if "epoch" in values:
            rows[int(values["epoch"])] = values
    return [rows[e] for e in sorted(rows)]


def _train_report(work: Path, epochs: int, sessions: int) -> dict[str, Any]:
    """Epochs, training seconds over all sessions (ultralytics' clock restarts on resume) and
    the select chips' mAP50 / mAP50-95 per epoch."""
    rows = _results(work)
    seconds, last = 0.0, 0.0
    for row in rows:  # the clock of each session runs up; a drop starts the next session
        t = row.get("time", 0.0)
        if t < last:
            seconds += last
        last = t
    curve = [
        [int(r["epoch"]), round(r.get("metrics/mAP50(B)", 0.0), 4),
         round(r.get("metrics/mAP50-95(B)", 0.0), 4)]
        for r in rows
    ]  # fmt: skip
    return {
        "epochs": epochs,
        "seconds": round(seconds + last, 1),
        "sessions": sessions,
        "select_map50_map50_95": curve,
    }


def _labels_digest(items: Sequence[LabelledImage]) -> str:
    """The boxes and classes the chips are cut with: labels edited since a work folder's
    chips were made must not reuse them (nor its weights)."""
    h = hashlib.sha256()
    for i in sorted(items, key=lambda i: i.name):
        h.update(i.name.encode())
        for a in (i.boxes, i.classes, i.corners):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _work_plan(work: Path, plan: dict[str, Any]) -> None:
    """Record what ``work`` trains, or refuse a folder that trains something else."""
    path = work / "plan.json"
    doc = json.loads(json.dumps(plan))
    if path.is_file():
        old = json.loads(path.read_text())
        if old != doc:
            changed = sorted(k for k in doc.keys() | old.keys() if doc.get(k) != old.get(k))
            raise ConfigError(
                f"{work} holds a training with other settings ({', '.join(changed)}); give "
                "another --work folder or delete this one"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _training_record(job: TrainJob, cfg: YoloTrainConfig, **more: Any) -> dict[str, Any]:
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "",
        "data": job.labels,
        "class_map": dict(job.class_map),
        "yolo": {**dataclasses.asdict(cfg), "data": dataset_record(cfg.data, oriented=cfg.oriented)}
        | ({"fine_tune": FINE_TUNE} if cfg.init else {}),
        "seed": job.fit.seed,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "date": time.strftime("%Y-%m-%d"),
        **more,
    }


def _train_and_validation(
    job: TrainJob, items: list[LabelledImage]
) -> tuple[list[LabelledImage], list[str]]:
    """The training images and the validation scenes' paths (see :func:`train_yolo_bundle`)."""
    if job.val_scenes:
        val_paths = list(job.val_scenes)
        both = {i.name for i in items} & {Path(p).name for p in val_paths}
        if both:
            raise ConfigError(f"validation scenes are also training scenes: {sorted(both)[:5]}")
        train = sorted(items, key=lambda x: x.name)
    else:
        train, val = split_by_image(items, val_fraction=job.val_fraction, seed=job.fit.seed)
        by_name = {Path(p).name: p for p in job.scenes}
        val_paths = [by_name[i.name] for i in val]
    if not val_paths:
        raise ConfigError("YOLO training needs validation images: --val-fraction > 0")
    return train, val_paths


def _new_session(work: Path) -> int:
    """Record one more training session in ``work``; their count (1 for a fresh run)."""
    with (work / "sessions.txt").open("a") as fh:
        fh.write(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    return len((work / "sessions.txt").read_text().split())


def _card(
    job: TrainJob, cfg: YoloTrainConfig, classes: tuple[str, ...], record: dict[str, Any]
) -> ModelCard:
    """The bundle's card: one whole-scene level, the YOLO's windows at the job's GSD."""
    level = Level(
        name="full", target_gsd_m=job.gsd_m, downsample=1, detector=WEIGHTS,
        window=cfg.window, halo=cfg.halo,
    )  # fmt: skip
    return ModelCard(
        name=job.name, arch=None, classes=classes, gsd_m=job.gsd_m, levels=(level,),
        score_threshold=cfg.score_threshold, extra={"licence": job.licence, "training": record},
    )  # fmt: skip


def train_yolo_bundle(
    job: TrainJob,
    cfg: YoloTrainConfig,
    *,
    evaluate: Evaluator | None = None,
    work: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> ModelCard:
    """Export chips, train, write ``yolo.pt`` + card into ``job.out``, then score it.

    Validation images: ``job.val_scenes`` when given (then every scene of ``job.scenes`` is a
    training image), else :func:`~geo_hires.train.chips.split_by_image` with the job's seed and
    validation fraction (the images the scanning network of the same job held out). The
    training images are split again into fit and select images (:func:`split_fit_select`).

    ``work``: a folder kept after the call (chips, ultralytics' run) in which the same call
    resumes an interrupted training; without it, a temporary folder removed at the end.
    """
    if cfg.init:
        check_init(cfg.init, cfg.arch)
    items, classes = load_labelled(
        job.scenes, job.labels, class_map=job.class_map, oriented=cfg.oriented, gsd_m=job.gsd_m
    )
    train, val_paths = _train_and_validation(job, items)
    fit, select = split_fit_select(train, select_fraction=cfg.select_fraction, seed=job.fit.seed)
    log(
        f"{len(fit)} fit images, {len(select)} select images (best epoch), "
        f"{len(val_paths)} validation images (metrics)"
    )
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    # absolute: ultralytics puts a relative project under its own runs_dir, not here
    folder = Path(work).resolve() if work else Path(tempfile.mkdtemp(prefix="geo-hires-yolo-"))
    plan = {
        "arch": cfg.arch, "batch": cfg.batch,
        "data": dataset_record(cfg.data, oriented=cfg.oriented),
        "seed": job.fit.seed, "gsd_m": job.gsd_m, "classes": list(classes),
        "fit_images": [i.name for i in fit], "select_images": [i.name for i in select],
        "init": cfg.init, "labels": _labels_digest([*fit, *select]),
    }  # fmt: skip
    try:
        _work_plan(folder, plan)
        data = chip_dataset(folder / "data", fit, select, classes, cfg.data,
                            oriented=cfg.oriented, gsd_m=job.gsd_m, log=log)  # fmt: skip
        train_names, scaled = [i.name for i in train], resampled(items)
        del items, train, fit, select  # the pixels live on as chips: free GBs for the hours ahead
        sessions = _new_session(folder)
        log(f"training {cfg.arch} in {folder} (session {sessions})")
        best, epochs, _ = _fit(data, folder, cfg, job.fit.seed, log)
        report = _train_report(folder, epochs, sessions)
        shutil.copyfile(best, out / WEIGHTS)
    finally:
        if work is None:
            shutil.rmtree(folder, ignore_errors=True)
    record = _training_record(
        job, cfg, train_images=train_names, fit_images=plan["fit_images"],
        select_images=plan["select_images"], val_images=[Path(p).name for p in val_paths],
        resampled=scaled, report=report,
    )  # fmt: skip
    card = _card(job, cfg, classes, record)
    save_card(out, card)
    log(f"trained {report['epochs']} epochs in {report['seconds']:.0f} s -> {out}")
    if evaluate is not None:
        metrics = evaluate(str(out), val_paths, job.labels)
        card = dataclasses.replace(card, extra={**card.extra, "metrics": metrics})
        save_card(out, card)
    return card
