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
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geo_hires.errors import ConfigError
from geo_hires.models.card import CascadeRule, Level, ModelCard, load_card
from geo_hires.models.yolo import ultralytics_env
from geo_hires.train.chips import load_labelled, split_by_image
from geo_hires.train.run import Evaluator, TrainJob
from geo_hires.train.yolo_data import YoloDataConfig, export_obb_dataset, export_yolo_dataset

__all__ = ["YOLO_ARCHS", "YoloTrainConfig", "make_cascade_bundle", "train_yolo_bundle"]

YOLO_ARCHS = ("yolov8n", "yolo11n", "yolov8n-obb", "yolo11n-obb")
WEIGHTS = "yolo.pt"


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
    """

    arch: str = "yolov8n"
    minutes: float = 50.0
    batch: int = 16
    data: YoloDataConfig = dataclasses.field(default_factory=YoloDataConfig)
    window: int = 512
    halo: int = 112
    score_threshold: float = 0.25
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.arch not in YOLO_ARCHS:
            raise ConfigError(f"--arch {self.arch!r}: choose one of {', '.join(YOLO_ARCHS)}")
        if self.minutes <= 0 or self.batch < 1:
            raise ConfigError("YOLO training: minutes > 0 and batch >= 1")


def _fit(data_yaml: Path, work: Path, cfg: YoloTrainConfig, seed: int) -> tuple[Path, int]:
    """Train and return the best checkpoint (ultralytics' fitness on the validation chips)."""
    threads = torch.get_num_threads()
    try:
        with ultralytics_env(work / "ultralytics"):
            from ultralytics import YOLO

            model = YOLO(f"{cfg.arch}.yaml")
            model.train(
                data=str(data_yaml), imgsz=cfg.data.chip, epochs=1000, time=cfg.minutes / 60,
                batch=cfg.batch, device=cfg.device, workers=0, amp=False, plots=False, seed=seed,
                deterministic=True, project=str(work / "runs"), name="train", exist_ok=True,
                verbose=False, val=True,
            )  # fmt: skip
            epochs = int(getattr(model.trainer, "epoch", -1)) + 1
            best = Path(getattr(model.trainer, "best", ""))
    finally:
        torch.set_num_threads(threads)
    if not best.is_file():
        raise ConfigError(f"ultralytics wrote no checkpoint under {work / 'runs'}")
    return best, epochs


def _training_record(job: TrainJob, cfg: YoloTrainConfig, **more: Any) -> dict[str, Any]:
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "",
        "data": job.labels,
        "class_map": dict(job.class_map),
        "yolo": {**dataclasses.asdict(cfg), "data": dataclasses.asdict(cfg.data)},
        "seed": job.fit.seed,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "date": time.strftime("%Y-%m-%d"),
        **more,
    }


def _write_card(folder: Path, card: ModelCard) -> None:
    (folder / "card.json").write_text(json.dumps(card.as_json(), indent=2, sort_keys=True) + "\n")


def train_yolo_bundle(
    job: TrainJob,
    cfg: YoloTrainConfig,
    *,
    evaluate: Evaluator | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> ModelCard:
    """Export chips, train, write ``yolo.pt`` + card into ``job.out``, then score it.

    The split is :func:`~geo_hires.train.chips.split_by_image` with the job's seed and
    validation fraction: the same images the scanning network of the same job held out.
    """
    oriented = cfg.arch.endswith("-obb")
    items, classes = load_labelled(
        job.scenes, job.labels, class_map=job.class_map, oriented=oriented, gsd_m=job.gsd_m
    )
    train, val = split_by_image(items, val_fraction=job.val_fraction, seed=job.fit.seed)
    if not val:
        raise ConfigError("YOLO training needs validation images: --val-fraction > 0")
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="geo-hires-yolo-"))
    try:
        start = time.perf_counter()
        data = (
            export_obb_dataset(train, val, classes, work / "data", chip=cfg.data.chip)
            if oriented
            else export_yolo_dataset(train, val, classes, work / "data", config=cfg.data)
        )
        log(f"chips written in {time.perf_counter() - start:.0f} s; training {cfg.arch}")
        start = time.perf_counter()
        best, epochs = _fit(data, work, cfg, job.fit.seed)
        seconds = time.perf_counter() - start
        shutil.copyfile(best, out / WEIGHTS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    level = Level(
        name="full", target_gsd_m=job.gsd_m, downsample=1, detector=WEIGHTS,
        window=cfg.window, halo=cfg.halo,
    )  # fmt: skip
    record = _training_record(
        job, cfg, train_images=[i.name for i in train], val_images=[i.name for i in val],
        report={"epochs": epochs, "seconds": round(seconds, 1)},
    )  # fmt: skip
    card = ModelCard(
        name=job.name, arch=None, classes=classes, gsd_m=job.gsd_m, levels=(level,),
        score_threshold=cfg.score_threshold, extra={"licence": job.licence, "training": record},
    )  # fmt: skip
    _write_card(out, card)
    log(f"trained {epochs} epochs in {seconds:.0f} s -> {out}")
    if evaluate is not None:
        by_name = {Path(p).name: p for p in job.scenes}
        metrics = evaluate(str(out), [by_name[i.name] for i in val], job.labels)
        card = dataclasses.replace(card, extra={**card.extra, "metrics": metrics})
        _write_card(out, card)
    return card


def make_cascade_bundle(
    scanner: str | os.PathLike[str],
    refiner: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str,
    rule: CascadeRule | None = None,
) -> ModelCard:
    """A cascade bundle: ``scanner``'s levels and weights, ``refiner``'s YOLO as the refiner.

    ``refiner`` is an ultralytics bundle (its first YOLO file is taken) or a ``.pt`` file.
    """
    from geo_hires.models.card import bundle_dir

    scan_dir = bundle_dir(scanner)
    scan_card = load_card(scan_dir)
    ref = Path(refiner)
    if ref.is_dir() or not ref.suffix:
        ref_card = load_card(ref)
        ref = bundle_dir(ref) / ref_card.yolo_files[0]
        record = ref_card.extra.get("training", {})
    else:
        record = {}
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scan_dir / "weights.pt", target / "weights.pt")
    for policy_file in ("zoom.pt", "zoom.pt.json"):  # its policy reads the same evidence
        if (scan_dir / policy_file).is_file():
            shutil.copyfile(scan_dir / policy_file, target / policy_file)
    shutil.copyfile(ref, target / WEIGHTS)
    rule = rule or CascadeRule(detector=WEIGHTS)
    extra = {k: v for k, v in scan_card.extra.items() if k not in {"metrics", "training", "name"}}
    extra["training"] = {
        "scanner": {"bundle": scan_card.name, **scan_card.extra.get("training", {})},
        "refiner": {"file": ref.name, **record},
        "class_map": scan_card.extra.get("training", {}).get("class_map", {}),
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "",
    }
    card = dataclasses.replace(
        scan_card, name=name, cascade=dataclasses.replace(rule, detector=WEIGHTS), extra=extra
    )
    _write_card(target, card)
    return card
