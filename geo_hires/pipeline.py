"""The one place that wires the stages: scene → levels → block scan → decode → merge → export.

``detect_scene`` returns pixel-frame detections and run statistics; ``run_detect`` adds the
outputs (GeoJSON, GeoPackage, quicklook). Both stream blocks, so memory stays bounded by the
block size, not the scene size.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window
from tqdm import tqdm

from geo_hires.config import ExportConfig, MergeConfig, ReadConfig, config_id
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.merge import nms
from geo_hires.models.codec import decode_peaks
from geo_hires.models.fcn import FCNDetector
from geo_hires.models.registry import LevelRule, ModelCard, load_model
from geo_hires.scan import Block, BlockOutput, default_device, halo_for, plan_blocks, scan
from geo_hires.scene import Scene, SceneReader, open_scene
from geo_hires.tiling import mask_lookup

__all__ = [
    "DetectConfig",
    "DetectResult",
    "LevelRun",
    "detect_scene",
    "level_downsample",
    "run_detect",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """Detection settings.

    Attributes:
        core: Block core side in level pixels (a multiple of the network stride). Larger blocks
            waste less on halos but hold more memory: a block is ``(core + 2 * halo)^2`` pixels.
        batch_size: Blocks per forward pass.
        score_threshold: Minimum heatmap score; ``None`` uses the model card's.
        iou_threshold: Class-aware NMS across levels.
        prefetch: Blocks read ahead on a background thread.
        max_per_block: Cap on peaks decoded per block.
        whole_read_pixels: A level of at most this many pixels is read once and sliced into
            blocks (files without internal tiling, like plain JPEG or PNG, would otherwise be
            decoded again for every block); larger levels stream block by block. The budget
            bounds what is held: 12 bytes per pixel (image and mask).
    """

    core: int = 1024
    batch_size: int = 2
    score_threshold: float | None = None
    iou_threshold: float = 0.5
    prefetch: int = 2
    max_per_block: int = 5000
    whole_read_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        if self.core < 16 or self.batch_size < 1 or self.prefetch < 1:
            raise ConfigError(
                "DetectConfig: core >= 16, batch_size >= 1 and prefetch >= 1 required"
            )
        if self.score_threshold is not None and not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score threshold must be in (0, 1), got {self.score_threshold}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelRun:
    """One level as run: its downsample factor and block counts."""

    name: str
    downsample: int
    blocks: int
    skipped_nodata: int
    detections: int


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DetectResult:
    """Merged detections (level-0 pixels) and what it took to get them."""

    detections: PixelDetections
    levels: tuple[LevelRun, ...]
    seconds: float
    megapixels: float

    @property
    def blocks(self) -> int:
        return sum(lv.blocks for lv in self.levels)


def level_downsample(rule: LevelRule, scene: Scene, card: ModelCard) -> int:
    """Downsample of a level for ``scene``: from ground size when the GSD is known.

    Without a GSD (no CRS) the scene is assumed to be at the model's training GSD.
    """
    if scene.gsd_m:
        return max(1, round(rule.target_gsd_m / scene.gsd_m))
    return max(1, round(rule.target_gsd_m / card.gsd_m)) if card.gsd_m else rule.downsample


def _level0(block: Block, d: int) -> Window:
    return Window(block.x0 * d, block.y0 * d, (block.x1 - block.x0) * d, (block.y1 - block.y0) * d)


def _decode(
    o: BlockOutput, *, model: FCNDetector, rule: LevelRule, d: int, threshold: float, cap: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    boxes, scores, classes = decode_peaks(
        o.out,
        num_classes=model.spec.num_classes,
        stride=model.stride,
        origin=o.origin,
        keep=o.keep,
        threshold=threshold,
        max_peaks=cap,
    )
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx = np.clip(
        ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int) - o.block.x0, 0, o.valid.shape[1] - 1
    )
    cy = np.clip(
        ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int) - o.block.y0, 0, o.valid.shape[0] - 1
    )
    ok = (side >= rule.min_size) & (side < rule.max_size) & o.valid[cy, cx]
    return boxes[ok] * d, scores[ok], classes[ok]


def _block_reader(
    reader: SceneReader, d: int, blocks: tuple[Block, ...], whole_read_pixels: int
) -> Callable[[Block], tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]:
    """Reads blocks from the scene, or slices them from one read of a small level."""
    lw, lh = max(b.x1 for b in blocks), max(b.y1 for b in blocks)
    if lw * lh > whole_read_pixels:

        def stream(b: Block) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
            w = reader.read(_level0(b, d), out_size=b.shape)
            return w.image, w.valid

        return stream
    whole = reader.read(Window(0, 0, lw * d, lh * d), out_size=(lh, lw))

    def sliced(b: Block) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        return whole.image[:, b.y0 : b.y1, b.x0 : b.x1], whole.valid[b.y0 : b.y1, b.x0 : b.x1]

    return sliced


def _run_level(
    reader: SceneReader,
    model: FCNDetector,
    card: ModelCard,
    li: int,
    cfg: DetectConfig,
    *,
    has_data: Callable[[Window], bool] | None,
    device: torch.device,
    tick: Callable[[Block], None],
) -> tuple[list[tuple[Any, Any, Any]], LevelRun]:
    scene, rule = reader.scene, card.levels[li]
    d = level_downsample(rule, scene, card)
    s = model.stride
    halo = halo_for(model.receptive_field, s)
    blocks = plan_blocks(
        math.ceil(scene.width / d), math.ceil(scene.height / d), core=cfg.core, halo=halo, stride=s
    )
    kept = [b for b in blocks if has_data is None or has_data(_level0(b, d))]
    for b in blocks[len(kept) :] if len(kept) < len(blocks) else ():
        tick(b)

    read = _block_reader(reader, d, blocks, cfg.whole_read_pixels)

    thr = cfg.score_threshold or card.score_threshold
    parts = []
    for o in scan(
        model,
        kept,
        read,
        batch_size=cfg.batch_size,
        device=device,
        prefetch=cfg.prefetch,
        on_block=tick,
    ):
        parts.append(_decode(o, model=model, rule=rule, d=d, threshold=thr, cap=cfg.max_per_block))
    n = sum(len(p[1]) for p in parts)
    return parts, LevelRun(
        name=rule.name,
        downsample=d,
        blocks=len(blocks),
        skipped_nodata=len(blocks) - len(kept),
        detections=n,
    )


def detect_scene(
    scene: Scene,
    model: FCNDetector,
    card: ModelCard,
    *,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> DetectResult:
    """Detect objects over every level of ``card`` in ``scene`` and merge them."""
    cfg = config or DetectConfig()
    device = device or default_device()
    start = time.perf_counter()
    parts_all: list[PixelDetections] = []
    runs = []
    level_names = tuple(r.name for r in card.levels)
    with SceneReader(scene, config=read_config) as reader:
        has_data = (
            mask_lookup(reader.read_overview(1_000_000).valid, scene) if scene.has_mask else None
        )
        bar = tqdm(
            total=None, desc=Path(scene.path).name, unit="block", disable=not progress, leave=False
        )
        with bar:
            for li in range(len(card.levels)):
                parts, run = _run_level(
                    reader,
                    model,
                    card,
                    li,
                    cfg,
                    has_data=has_data,
                    device=device,
                    tick=lambda _b: bar.update(1),
                )
                runs.append(run)
                for boxes, scores, classes in parts:
                    parts_all.append(
                        PixelDetections.build(
                            boxes,
                            scores,
                            classes,
                            class_names=card.classes,
                            levels=np.full(len(scores), li),
                            level_names=level_names,
                        )
                    )
    merged = (
        PixelDetections.concat(parts_all)
        if parts_all
        else PixelDetections.empty(card.classes, level_names)
    )
    boxes = merged.boxes.copy()
    np.clip(boxes[:, 0::2], 0, scene.width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, scene.height, out=boxes[:, 1::2])
    merged = dataclasses.replace(merged, boxes=boxes)
    merged = nms(merged, config=MergeConfig(iou_threshold=cfg.iou_threshold))
    return DetectResult(
        detections=merged,
        levels=tuple(runs),
        seconds=time.perf_counter() - start,
        megapixels=scene.pixels / 1e6,
    )


def run_detect(
    scene_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = "aircraft_lsn",
    gpkg: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> DetectResult:
    """Detect in one scene and write GeoJSON (plus GeoPackage and quicklook when asked)."""
    from geo_hires.export import write_geojson, write_gpkg, write_quicklook

    cfg = config or DetectConfig()
    net, card = load_model(model)
    scene = open_scene(scene_path, config=read_config)
    result = detect_scene(
        scene, net, card, config=cfg, read_config=read_config, device=device, progress=progress
    )
    export = ExportConfig(model_name=card.name)
    extra = {
        "config_id": config_id(cfg, export),
        "levels": [
            {"name": r.name, "downsample": r.downsample, "blocks": r.blocks} for r in result.levels
        ],
    }
    write_geojson(output, result.detections, scene, config=export, extra=extra)
    if gpkg:
        write_gpkg(gpkg, result.detections, scene, config=export)
    if quicklook:
        write_quicklook(quicklook, result.detections, scene, read_config=read_config)
    return result
