"""Labelled scenes → an ultralytics (YOLO) dataset of chips, split by image.

What ``geo-hires train --arch yolo…`` trains on. Chips come from the same
sampler as the scanner's training (:class:`~geo_hires.train.chips.ChipSampler`: centred near
objects with jitter, plus background chips; the 8 symmetries of the square, brightness and
contrast), are written once as PNG files with YOLO label files (``class cx cy w h``,
normalised), and a ``data.yaml`` names them — what ultralytics trains from, offline.
Small chips are the point: a YOLO refiner that sees 256-px crops around objects trains ~6x
more chips per second than one that sees 640-px frames, which is what an hour on two CPU cores
allows.

GSD range: a refiner reads its windows resampled to *its own* GSD from scenes anywhere in
~0.3-1.2 m. A scene finer than the model is area-averaged down and looks like native imagery; a
coarser one reaches the model upsampled: objects at the right size, but with the detail of the
coarser scene. So each chip is drawn as if from a scene at a random GSD in
``YoloDataConfig.gsd_range`` (:func:`degrade_to_gsd`), plus a small size jitter (``scale_range``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from geo_hires.errors import ConfigError
from geo_hires.train.chips import ChipSampler, LabelledImage

__all__ = [
    "UPSAMPLE_MODES",
    "YoloDataConfig",
    "chip_dataset",
    "dataset_record",
    "degrade_to_gsd",
    "draw_gsd",
    "export_obb_dataset",
    "export_yolo_dataset",
]

UPSAMPLE_MODES = ("bilinear", "area")
"""How a window of a coarser scene may be brought up to the model's GSD: bilinear, or ``area``
(torch's box filter, what GDAL's ``average`` does when it upsamples: near-nearest)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class YoloDataConfig:
    """How many chips of which size, from scenes at which GSDs.

    Attributes:
        chip: Chip side in pixels (the YOLO ``imgsz``).
        chips_per_image: Chips drawn from each training image (validation: half as many).
        scale_range: Log-uniform size jitter of the chips (chip px per scene px; 1.0: objects
            at the model's GSD, a refiner's input).
        gsd_range: Log-uniform range of the scene GSD (metres) each chip is drawn as if from
            (:func:`degrade_to_gsd`); ``None``: chips at the data's own GSD only.
        upsample: Modes a coarser scene's window may be upsampled with; one is drawn per chip.
        seed: Seed of the draw (same seed, same dataset).
    """

    chip: int = 256
    chips_per_image: int = 40
    scale_range: tuple[float, float] = (0.88, 1.12)
    gsd_range: tuple[float, float] | None = (0.3, 1.2)
    upsample: tuple[str, ...] = UPSAMPLE_MODES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chip < 32 or self.chip % 32 or self.chips_per_image < 1:
            raise ConfigError("YoloDataConfig: chip a multiple of 32 (>= 32), chips_per_image >= 1")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"YoloDataConfig: scale_range {self.scale_range}: 0 < low <= high")
        if self.gsd_range is not None and not 0 < self.gsd_range[0] <= self.gsd_range[1]:
            raise ConfigError(f"YoloDataConfig: gsd_range {self.gsd_range}: 0 < low <= high")
        if not self.upsample or not set(self.upsample) <= set(UPSAMPLE_MODES):
            raise ConfigError(f"YoloDataConfig: upsample from {', '.join(UPSAMPLE_MODES)}")


def draw_gsd(rng: np.random.Generator, gsd_range: tuple[float, float]) -> float:
    """A scene GSD (metres), log-uniform in ``gsd_range``."""
    lo, hi = gsd_range
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def degrade_to_gsd(
    chip: torch.Tensor, *, scene_gsd: float, model_gsd: float, upsample: str = "bilinear"
) -> torch.Tensor:
    """A ``(C, H, W)`` float chip at ``model_gsd`` as the model sees it when it was read from a
    scene at ``scene_gsd``.

    Coarser scene (``scene_gsd > model_gsd``): the chip is area-averaged down by
    ``model_gsd / scene_gsd`` (the coarser scene's pixels; GDAL's ``average``, as the reader
    decimates) and brought back up to ``H x W`` with ``upsample`` (the reader resampling to the
    model's GSD): objects keep their size and their boxes, and lose the detail. A finer or equal
    scene reaches the model area-averaged to its GSD, which is what the data already is: the
    chip is returned unchanged.
    """
    if upsample not in UPSAMPLE_MODES:
        raise ConfigError(f"upsample {upsample!r}: choose one of {', '.join(UPSAMPLE_MODES)}")
    if scene_gsd <= model_gsd:
        return chip
    _, h, w = chip.shape
    f = model_gsd / scene_gsd
    small = F.interpolate(
        chip[None], size=(max(1, round(h * f)), max(1, round(w * f))), mode="area"
    )
    if upsample == "bilinear":
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return F.interpolate(small, size=(h, w), mode="area")[0]


def _write_data_yaml(root: Path, class_names: Sequence[str]) -> Path:
    """The ``data.yaml`` ultralytics trains from: split folders and class names."""
    data = {
        "path": str(root.resolve()),
        "train": "train/images",
        "val": "val/images",
        "names": dict(enumerate(class_names)),
    }
    target = root / "data.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def _write_split(
    items: Sequence[LabelledImage],
    folder: Path,
    n: int,
    sampler: ChipSampler,
    seed: int,
    *,
    cfg: YoloDataConfig,
    gsd_m: float,
) -> int:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = 0
    for item in items:
        stem = Path(item.name).stem
        for k in range(n):
            img, boxes, classes = sampler.sample(item, rng)
            if cfg.gsd_range is not None:
                scene_gsd = draw_gsd(rng, cfg.gsd_range)
                mode = cfg.upsample[int(rng.integers(len(cfg.upsample)))]
                img = degrade_to_gsd(img, scene_gsd=scene_gsd, model_gsd=gsd_m, upsample=mode)
            pixels = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"{stem}_{k:04d}.png")
            s = float(sampler.chip)
            rows = [
                f"{int(c)} {(b[0] + b[2]) / 2 / s:.6f} {(b[1] + b[3]) / 2 / s:.6f} "
                f"{(b[2] - b[0]) / s:.6f} {(b[3] - b[1]) / s:.6f}"
                for b, c in zip(boxes, classes, strict=True)
            ]
            (folder / "labels" / f"{stem}_{k:04d}.txt").write_text("".join(r + "\n" for r in rows))
            count += 1
    return count


def export_yolo_dataset(
    train: Sequence[LabelledImage],
    val: Sequence[LabelledImage],
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    config: YoloDataConfig | None = None,
    gsd_m: float = 0.5,
) -> Path:
    """Write chips of ``train`` and ``val`` (already split by image; ``val`` is what ultralytics
    picks its best epoch on) and return ``data.yaml``. ``gsd_m`` is the GSD of the images and
    of the model; chips are degraded to scenes over ``config.gsd_range`` from it."""
    cfg = config or YoloDataConfig()
    if not train or not val:
        raise ConfigError("a YOLO dataset needs training and validation images (split by image)")
    root = Path(out_dir)
    sampler = ChipSampler(chip=cfg.chip, scale_range=cfg.scale_range)
    n_val = max(1, cfg.chips_per_image // 2)
    _write_split(
        train, root / "train", cfg.chips_per_image, sampler, cfg.seed, cfg=cfg, gsd_m=gsd_m
    )
    _write_split(val, root / "val", n_val, sampler, cfg.seed + 1, cfg=cfg, gsd_m=gsd_m)
    return _write_data_yaml(root, class_names)


def _write_obb_split(items: Sequence[LabelledImage], folder: Path, chip: int) -> int:
    """Chips on a half-overlapping grid at native resolution (ultralytics augments them while
    training), each with the oriented boxes whose centre it holds, corners normalised and
    clipped to the chip."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    count = 0
    for item in items:
        if item.corners is None:
            raise ConfigError(f"{item.name}: OBB training needs oriented labels (load_labelled)")
        _, h, w = item.image.shape
        centres = item.corners.mean(axis=1)
        step = chip // 2
        for y0 in range(0, max(1, h - step), step):
            for x0 in range(0, max(1, w - step), step):
                tile = np.zeros((chip, chip, 3), np.uint8)
                part = item.image[:, y0 : y0 + chip, x0 : x0 + chip].permute(1, 2, 0).numpy()
                tile[: part.shape[0], : part.shape[1]] = part
                inside = (
                    (centres[:, 0] >= x0) & (centres[:, 0] < x0 + chip)
                    & (centres[:, 1] >= y0) & (centres[:, 1] < y0 + chip)
                )  # fmt: skip
                local = np.clip((item.corners[inside] - [x0, y0]) / chip, 0.0, 1.0)
                rows = [
                    f"{int(c)} " + " ".join(f"{v:.6f}" for v in q.reshape(-1))
                    for q, c in zip(local, item.classes[inside], strict=True)
                ]
                stem = f"{Path(item.name).stem}_{y0}_{x0}"
                Image.fromarray(tile).save(folder / "images" / f"{stem}.png")
                (folder / "labels" / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
                count += 1
    return count


def dataset_record(config: YoloDataConfig, *, oriented: bool) -> dict[str, Any]:
    """The chip dataset as it is drawn, for a card and a work plan: an OBB dataset is a
    half-overlapping grid at the data's own GSD (its chip count and GSD range are not used,
    so not recorded)."""
    if oriented:
        return {"chip": config.chip, "sampling": "half-overlapping grid, data's own GSD"}
    return dataclasses.asdict(config)


def export_obb_dataset(
    train: Sequence[LabelledImage],
    val: Sequence[LabelledImage],
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    chip: int = 256,
) -> Path:
    """Write an ultralytics OBB dataset (``class x1 y1 ... x4 y4``, normalised) of ``chip``-px
    grid chips and return its ``data.yaml``."""
    if not train or not val:
        raise ConfigError("a YOLO dataset needs training and validation images (split by image)")
    root = Path(out_dir)
    _write_obb_split(train, root / "train", chip)
    _write_obb_split(val, root / "val", chip)
    return _write_data_yaml(root, class_names)


def chip_dataset(
    folder: Path,
    fit: Sequence[LabelledImage],
    select: Sequence[LabelledImage],
    classes: Sequence[str],
    config: YoloDataConfig,
    *,
    oriented: bool,
    gsd_m: float,
    log: Callable[[str], None],
) -> Path:
    """The chip dataset's ``data.yaml`` in ``folder``, written unless a finished export is
    there (a resumed training trains on the very chips it started on)."""
    if not (folder / "complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        log(f"writing chips of {len(fit)} + {len(select)} images (before the timed training)")
        if oriented:
            export_obb_dataset(fit, select, classes, folder, chip=config.chip)
        else:
            export_yolo_dataset(fit, select, classes, folder, config=config, gsd_m=gsd_m)
        (folder / "complete").write_text("")
        log(f"chips written in {time.perf_counter() - start:.0f} s")
    return folder / "data.yaml"
