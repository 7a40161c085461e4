"""The one place that wires the stages: scene → levels → block scan → decode → merge → export.

Work is cut into *units* (a batch of same-shape blocks of one level) by a deterministic plan.
An executor runs units — in this process (:class:`LocalExecutor`) or on Ray actors
(``geo_hires.runtime``) — and the merge sorts unit results by key, so every executor gives the
same bytes. A :class:`~geo_hires.journal.Journal` records finished units so that a killed run
resumes without redoing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window
from tqdm import tqdm

from geo_hires.config import ExportConfig, MergeConfig, ReadConfig, config_id
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.journal import Journal, UnitResult
from geo_hires.merge import nms
from geo_hires.models.codec import decode_peaks
from geo_hires.models.fcn import FCNDetector
from geo_hires.models.registry import LevelRule, ModelCard, load_model
from geo_hires.scan import (
    Block,
    BlockOutput,
    batch_blocks,
    forward_batch,
    halo_for,
    plan_blocks,
    prepare,
)
from geo_hires.scene import Scene, SceneReader, open_scene
from geo_hires.tiling import mask_lookup

__all__ = [
    "DetectConfig",
    "DetectResult",
    "Executor",
    "LevelRun",
    "LocalExecutor",
    "Unit",
    "UnitRunner",
    "detect_scene",
    "journal_for",
    "level_downsample",
    "merge_results",
    "plan_units",
    "run_detect",
    "torch_threads",
]

Item = tuple[Block, npt.NDArray[np.float32], npt.NDArray[np.bool_]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """Detection settings.

    Attributes:
        core: Block core side in level pixels (a multiple of the network stride). Larger blocks
            waste less on halos but hold more memory: a block is ``(core + 2 * halo)^2`` pixels.
        batch_size: Blocks per forward pass (one work unit).
        score_threshold: Minimum heatmap score; ``None`` uses the model card's.
        iou_threshold: Class-aware NMS across levels.
        prefetch: Units read ahead on a background thread (local executor).
        max_per_block: Cap on peaks decoded per block.
        whole_read_pixels: A level of at most this many pixels is read once and sliced into
            blocks (files without internal tiling, like plain JPEG or PNG, would otherwise be
            decoded again for every block); larger levels stream block by block. The budget
            bounds what is held: 13 bytes per pixel (image and mask).
        threads: Torch intra-op threads for the forward pass, in every executor. Part of the
            numerics: CPU convolutions split their sums by thread, so the same thread count is
            what makes local and Ray runs byte-identical.
    """

    core: int = 1024
    batch_size: int = 2
    score_threshold: float | None = None
    iou_threshold: float = 0.5
    prefetch: int = 2
    max_per_block: int = 5000
    whole_read_pixels: int = 16_000_000
    threads: int = 2

    def __post_init__(self) -> None:
        if self.core < 16 or self.batch_size < 1 or self.prefetch < 1:
            raise ConfigError(
                "DetectConfig: core >= 16, batch_size >= 1 and prefetch >= 1 required"
            )
        if self.score_threshold is not None and not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score threshold must be in (0, 1), got {self.score_threshold}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unit:
    """A work unit: same-shape blocks of one level, run as one batch.

    Attributes:
        key: ``L{level}-U{index}``, stable for a given scene, model and config.
        level: Level index in the model card.
        downsample: Level-0 pixels per level pixel.
        blocks: The blocks (level pixels).
    """

    key: str
    level: int
    downsample: int
    blocks: tuple[Block, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelRun:
    """One level as planned: its downsample factor and block counts."""

    name: str
    downsample: int
    blocks: int
    skipped_nodata: int


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DetectResult:
    """Merged detections (level-0 pixels) and what it took to get them."""

    detections: PixelDetections
    levels: tuple[LevelRun, ...]
    seconds: float
    megapixels: float
    resumed_units: int = 0

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


def _level_size(scene: Scene, d: int) -> tuple[int, int]:
    return math.ceil(scene.width / d), math.ceil(scene.height / d)


def plan_units(
    scene: Scene,
    model: FCNDetector,
    card: ModelCard,
    cfg: DetectConfig,
    *,
    has_data: Callable[[Window], bool] | None = None,
) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
    """Every level's blocks (nodata-only blocks left out), batched into keyed units."""
    units: list[Unit] = []
    runs = []
    halo = halo_for(model.receptive_field, model.stride)
    for li, rule in enumerate(card.levels):
        d = level_downsample(rule, scene, card)
        lw, lh = _level_size(scene, d)
        blocks = plan_blocks(lw, lh, core=cfg.core, halo=halo, stride=model.stride)
        kept = [b for b in blocks if has_data is None or has_data(_level0(b, d))]
        for k, batch in enumerate(batch_blocks(kept, cfg.batch_size)):
            units.append(Unit(key=f"L{li}-U{k}", level=li, downsample=d, blocks=batch))
        runs.append(
            LevelRun(
                name=rule.name,
                downsample=d,
                blocks=len(blocks),
                skipped_nodata=len(blocks) - len(kept),
            )
        )
    return tuple(units), tuple(runs)


class UnitRunner:
    """Reads and computes units of one scene with one model (used by every executor).

    Small levels (see ``DetectConfig.whole_read_pixels``) are read once and cached.
    """

    def __init__(
        self,
        reader: SceneReader,
        model: FCNDetector,
        card: ModelCard,
        cfg: DetectConfig,
        device: torch.device | None = None,
    ) -> None:
        self.reader, self.card, self.cfg = reader, card, cfg
        self.model, self.device = prepare(model, device)
        self._whole: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = {}

    def read(self, unit: Unit) -> list[Item]:
        """Inputs of each block of ``unit``: (block, image, valid)."""
        d = unit.downsample
        lw, lh = _level_size(self.reader.scene, d)
        if lw * lh <= self.cfg.whole_read_pixels:
            if d not in self._whole:
                w = self.reader.read(Window(0, 0, lw * d, lh * d), out_size=(lh, lw))
                self._whole[d] = (w.image, w.valid)
            img, ok = self._whole[d]
            return [
                (b, img[:, b.y0 : b.y1, b.x0 : b.x1], ok[b.y0 : b.y1, b.x0 : b.x1])
                for b in unit.blocks
            ]
        items = []
        for b in unit.blocks:
            w = self.reader.read(_level0(b, d), out_size=b.shape)
            items.append((b, w.image, w.valid))
        return items

    def compute(self, unit: Unit, items: list[Item]) -> UnitResult:
        """Forward the unit's batch and decode its blocks' cores into level-0 boxes."""
        rule = self.card.levels[unit.level]
        thr = self.cfg.score_threshold or self.card.score_threshold
        parts = [
            self._decode(o, rule, unit.downsample, thr)
            for o in forward_batch(self.model, items, self.device)
        ]
        return UnitResult(
            key=unit.key,
            level=unit.level,
            boxes=np.concatenate([p[0] for p in parts]).reshape(-1, 4)
            if parts
            else np.zeros((0, 4)),
            scores=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
            classes=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64),
        )

    def run(self, unit: Unit) -> UnitResult:
        return self.compute(unit, self.read(unit))

    def _decode(
        self, o: BlockOutput, rule: LevelRule, d: int, threshold: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        boxes, scores, classes = decode_peaks(
            o.out,
            num_classes=self.model.spec.num_classes,
            stride=self.model.stride,
            origin=o.origin,
            keep=o.keep,
            threshold=threshold,
            max_peaks=self.cfg.max_per_block,
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


def merge_results(
    results: Iterable[UnitResult], card: ModelCard, scene: Scene, cfg: DetectConfig
) -> PixelDetections:
    """Unit results (any order) → clipped, NMS-merged detections in canonical order."""
    level_names = tuple(r.name for r in card.levels)
    ordered = sorted(results, key=lambda r: (r.level, int(r.key.rsplit("U", 1)[1])))
    parts = [
        PixelDetections.build(
            r.boxes,
            r.scores,
            r.classes,
            class_names=card.classes,
            levels=np.full(len(r.scores), r.level),
            level_names=level_names,
        )
        for r in ordered
    ]
    merged = (
        PixelDetections.concat(parts) if parts else PixelDetections.empty(card.classes, level_names)
    )
    boxes = merged.boxes.copy()
    np.clip(boxes[:, 0::2], 0, scene.width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, scene.height, out=boxes[:, 1::2])
    return nms(
        dataclasses.replace(merged, boxes=boxes),
        config=MergeConfig(iou_threshold=cfg.iou_threshold),
    )


class Executor(Protocol):
    """Runs the units of a scene and returns their results (any order, each unit once)."""

    def run_units(
        self,
        scene: Scene,
        model: FCNDetector,
        card: ModelCard,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None: ...


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, restoring the caller's setting afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _prefetched(
    runner: UnitRunner, units: Iterable[Unit], depth: int
) -> Iterator[tuple[Unit, list[Item]]]:
    it = iter(units)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geo-hires-read") as pool:
        queue: deque[tuple[Unit, Future[list[Item]]]] = deque()
        for u in it:
            queue.append((u, pool.submit(runner.read, u)))
            if len(queue) >= depth:
                break
        while queue:
            unit, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(runner.read, nxt)))
            yield unit, fut.result()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalExecutor:
    """In-process execution, reads running ``cfg.prefetch`` units ahead on a thread."""

    device: torch.device | None = None

    def run_units(
        self,
        scene: Scene,
        model: FCNDetector,
        card: ModelCard,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None:
        with torch_threads(cfg.threads), SceneReader(scene, config=read_config) as reader:
            runner = UnitRunner(reader, model, card, cfg, self.device)
            for unit, items in _prefetched(runner, units, cfg.prefetch):
                on_result(runner.compute(unit, items))


def _has_data(scene: Scene, read_config: ReadConfig | None) -> Callable[[Window], bool] | None:
    if not scene.has_mask:
        return None
    with SceneReader(scene, config=read_config) as reader:
        return mask_lookup(reader.read_overview(1_000_000).valid, scene)


def detect_scene(
    scene: Scene,
    model: FCNDetector,
    card: ModelCard,
    *,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    journal: Journal | None = None,
    resume: bool = False,
    progress: bool = False,
) -> DetectResult:
    """Detect objects over every level of a model bundle in ``scene`` and merge them.

    Args:
        scene: The scene.
        model: The (folded) network.
        card: Its model card (levels, classes, threshold).
        config: Detection settings.
        read_config: Read budget.
        executor: Where units run (default: this process).
        journal: Records finished units; with ``resume`` those are not run again.
        resume: Reuse the journal's finished units.
        progress: Show a progress bar.
    """
    cfg = config or DetectConfig()
    executor = executor or LocalExecutor()
    start = time.perf_counter()
    units, runs = plan_units(scene, model, card, cfg, has_data=_has_data(scene, read_config))
    done = journal.start(resume=resume) if journal is not None else {}
    valid_keys = {u.key for u in units}
    results = {k: r for k, r in done.items() if k in valid_keys}
    todo = tuple(u for u in units if u.key not in results)
    bar = tqdm(
        total=len(units),
        initial=len(results),
        desc=Path(scene.path).name,
        unit="unit",
        disable=not progress,
        leave=False,
    )

    def on_result(r: UnitResult) -> None:
        if r.key in results:  # a retried unit is counted once
            return
        results[r.key] = r
        if journal is not None:
            journal.record(r)
        bar.update(1)

    with bar:
        executor.run_units(
            scene, model, card, todo, cfg, on_result=on_result, read_config=read_config
        )
    missing = valid_keys - results.keys()
    if missing:
        raise ConfigError(
            f"executor lost {len(missing)} work units (e.g. {sorted(missing)[0]}); "
            "rerun with --resume"
        )
    return DetectResult(
        detections=merge_results(results.values(), card, scene, cfg),
        levels=runs,
        seconds=time.perf_counter() - start,
        megapixels=scene.pixels / 1e6,
        resumed_units=len(done),
    )


def journal_for(
    output: str | os.PathLike[str], scene: Scene, model: FCNDetector, cfg: DetectConfig
) -> Journal:
    """The journal beside ``output``, tied to the scene file, the weights and the config."""
    st = os.stat(scene.path)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    identity = {
        "scene": os.path.abspath(scene.path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "weights": digest.hexdigest()[:16],
        "config_id": config_id(cfg),
    }
    return Journal(f"{os.fspath(output)}.journal", identity)


def run_detect(
    scene_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = "aircraft_lsn",
    gpkg: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    progress: bool = False,
) -> DetectResult:
    """Detect in one scene and write GeoJSON (plus GeoPackage and quicklook when asked).

    Finished units are journalled beside ``output`` until the GeoJSON is written, so a killed
    run continues with ``resume=True``.
    """
    from geo_hires.export import write_geojson, write_gpkg, write_quicklook

    cfg = config or DetectConfig()
    net, card = load_model(model)
    scene = open_scene(scene_path, config=read_config)
    journal = journal_for(output, scene, net, cfg)
    result = detect_scene(
        scene,
        net,
        card,
        config=cfg,
        read_config=read_config,
        executor=executor,
        journal=journal,
        resume=resume,
        progress=progress,
    )
    export = ExportConfig(model_name=card.name)
    extra: dict[str, Any] = {
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
    journal.remove()
    return result
