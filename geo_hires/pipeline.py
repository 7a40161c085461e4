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
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from geo_hires.aoi import AreaOfInterest, load_aoi
from geo_hires.config import ExportConfig, MergeConfig, ReadConfig, config_id
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError
from geo_hires.journal import Journal, UnitResult
from geo_hires.merge import nms
from geo_hires.models.bundle import Detectors, load_bundle
from geo_hires.models.fcn import FCNDetector
from geo_hires.models.registry import ModelCard
from geo_hires.models.zoom_policy import policy_features
from geo_hires.scan import read_ahead
from geo_hires.scene import Scene, SceneReader
from geo_hires.scene.stac import open_input
from geo_hires.tiling import mask_lookup
from geo_hires.units import (
    REFINE,
    DetectConfig,
    LevelRun,
    Select,
    Unit,
    UnitRunner,
    coarsest,
    level_downsample,
    level_names,
    plan_units,
)
from geo_hires.zoom import EVIDENCE_COLUMNS, ZoomConfig, choose, window_evidence

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


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DetectResult:
    """Merged detections (level-0 pixels) and what it took to get them."""

    detections: PixelDetections
    levels: tuple[LevelRun, ...]
    seconds: float
    megapixels: float
    resumed_units: int = 0
    valid_mask: npt.NDArray[np.bool_] | None = None

    @property
    def blocks(self) -> int:
        return sum(lv.blocks for lv in self.levels)

    @property
    def pixels_scanned(self) -> int:
        """Level-0 pixels of the scanned block cores, summed over levels."""
        return sum(lv.pixels_scanned for lv in self.levels)

    def zoom(self, zoom: ZoomConfig) -> dict[str, Any]:
        """What the fine pass processed: the zoom mode and budget, the share of fine windows
        scanned and the share of the scene's pixels the fine levels read."""
        scan = [lv for lv in self.levels if lv.name != REFINE]
        top = max((lv.downsample for lv in scan), default=1)
        fine = [lv for lv in scan if lv.downsample < top or lv.windows is not None]
        windows = sum(lv.windows if lv.windows is not None else len(lv.cores) for lv in fine)
        pixels = sum(lv.pixels for lv in fine)
        return {
            "mode": zoom.mode,
            "budget": zoom.budget,
            "fine_windows": sum(len(lv.cores) for lv in fine),
            "fine_windows_fraction": round(sum(len(lv.cores) for lv in fine) / windows, 4)
            if windows
            else 0.0,
            "fine_pixels_fraction": round(sum(lv.pixels_scanned for lv in fine) / pixels, 4)
            if pixels
            else 0.0,
        }

    @property
    def pixels_planned(self) -> int:
        """Level-0 pixels of the scene, once per level (what a scan without AOI covers)."""
        return sum(lv.pixels for lv in self.levels)


def merge_results(
    results: Iterable[UnitResult], card: ModelCard, scene: Scene, cfg: DetectConfig
) -> PixelDetections:
    """Unit results (any order) → clipped, NMS-merged detections in canonical order."""
    names = level_names(card)
    ordered = sorted(results, key=lambda r: (r.level, int(r.key.rsplit("U", 1)[1])))
    parts = [
        dataclasses.replace(
            PixelDetections.build(
                r.boxes,
                r.scores,
                r.classes,
                class_names=card.classes,
                levels=np.full(len(r.scores), r.level),
                level_names=names,
            ),
            corners=r.corners,
        )
        for r in ordered
    ]
    merged = PixelDetections.concat(parts) if parts else PixelDetections.empty(card.classes, names)
    boxes = merged.boxes.copy()  # oriented corners are left as found: clipping would skew them
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
        model: FCNDetector | Detectors,
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalExecutor:
    """In-process execution, reads running ``cfg.prefetch`` units ahead on a thread."""

    device: torch.device | None = None

    def run_units(
        self,
        scene: Scene,
        model: FCNDetector | Detectors,
        card: ModelCard,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None:
        with torch_threads(cfg.threads), SceneReader(scene, config=read_config) as reader:
            runner = UnitRunner(reader, model, card, cfg, self.device)
            for unit, items in read_ahead(runner.read, units, cfg.prefetch):
                on_result(runner.compute(unit, items))


def _valid_mask(scene: Scene, read_config: ReadConfig | None) -> npt.NDArray[np.bool_] | None:
    """The decimated (<= 1 MP) validity mask, read once: it skips blocks and bounds coverage."""
    if not scene.has_mask:
        return None
    with SceneReader(scene, config=read_config) as reader:
        return reader.read_overview(1_000_000).valid


def detect_scene(
    scene: Scene,
    model: FCNDetector | Detectors,
    card: ModelCard,
    *,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    journal: Journal | None = None,
    resume: bool = False,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    aoi: AreaOfInterest | None = None,
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
        on_progress: Called with ``(units done, units total)`` once before the first unit and
            after each; an exception it raises stops the run (finished units stay journalled),
            which is how a service cancels a job.
        aoi: Scan only blocks whose core touches it; keep detections centred in it.
    """
    cfg = config or DetectConfig()
    executor = executor or LocalExecutor()
    detectors = Detectors.of(model)
    start = time.perf_counter()
    valid = _valid_mask(scene, read_config)
    plan = functools.partial(
        plan_units,
        scene,
        detectors,
        card,
        cfg,
        has_data=mask_lookup(valid, scene) if valid is not None else None,
        in_aoi=aoi.touches_window() if aoi is not None else None,
    )
    coarse = coarsest(card, scene, cfg) if cfg.zoom.selective else None
    units, runs = plan(only=None if coarse is None else (coarse,))
    done = journal.start(resume=resume) if journal is not None else {}
    run = _Progress(done=done, journal=journal, on_progress=on_progress)
    with tqdm(
        total=len(units), desc=Path(scene.path).name, unit="unit", disable=not progress, leave=False
    ) as bar:
        run.bar = bar
        results = run.units(executor, scene, detectors, card, units, cfg, read_config)
        if coarse is not None:  # zoom: the fine levels only where chosen
            fine = tuple(i for i in range(len(card.levels)) if i != coarse)
            select = _zoom_select(cfg.zoom, results, detectors, card)
            units, fine_runs = plan(only=fine, select=select)
            results += run.units(executor, scene, detectors, card, units, cfg, read_config)
            runs = tuple(sorted((*runs, *fine_runs), key=lambda r: level_names(card).index(r.name)))
        merged = merge_results(results, card, scene, cfg)
        if card.cascade is not None:
            merged, refine_run = _cascade(
                run, executor, scene, detectors, card, merged, cfg, read_config
            )
            runs = (*runs, refine_run)
    return DetectResult(
        detections=aoi.keep(merged) if aoi is not None else merged,
        levels=runs,
        seconds=time.perf_counter() - start,
        megapixels=scene.pixels / 1e6,
        resumed_units=len(done),
        valid_mask=valid,
    )


def _zoom_select(
    zoom: ZoomConfig, coarse: list[UnitResult], model: Detectors, card: ModelCard
) -> Select:
    """The zoom decision over a fine level's windows, from the coarse level's evidence (and,
    for ``rl``, the bundle's policy reading it)."""
    found = [r.evidence for r in coarse if r.evidence is not None]
    evidence = np.concatenate(found) if found else np.zeros((0, EVIDENCE_COLUMNS))
    policy = model.policy
    if zoom.mode == "rl":
        if policy is None:
            raise ConfigError(
                f"--zoom rl: model {card.name!r} has no zoom policy; train one with "
                "geo-hires train-zoom, or use --zoom gate"
            )
        if policy.spec.window != zoom.window:
            raise ConfigError(
                f"--zoom rl: the policy decides on {policy.spec.window}-px windows, the run "
                f"asks for {zoom.window}"
            )

    def select(_level: int, cores: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        if zoom.mode == "rl" and policy is not None:
            feats = policy_features(evidence, cores, policy.spec.grid, policy.spec.split_px)
            return choose(zoom, policy.probabilities(feats))
        return choose(zoom, window_evidence(evidence, cores))

    return select


@dataclasses.dataclass(kw_only=True, eq=False)
class _Progress:
    """Runs planned units through an executor with journal, resume and progress reports."""

    done: dict[str, UnitResult]
    journal: Journal | None
    on_progress: Callable[[int, int], None] | None
    bar: Any = None
    finished: int = 0
    total: int = 0

    def units(
        self,
        executor: Executor,
        scene: Scene,
        model: Detectors,
        card: ModelCard,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        read_config: ReadConfig | None,
    ) -> list[UnitResult]:
        """Results of ``units`` (those journalled reused): every unit once, or an error."""
        keys = {u.key for u in units}
        results = {k: r for k, r in self.done.items() if k in keys}
        self.total += len(units)
        self.finished += len(results)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(len(results))
        todo = tuple(u for u in units if u.key not in results)

        def on_result(r: UnitResult) -> None:
            if r.key in results:  # a retried unit is counted once
                return
            results[r.key] = r
            if self.journal is not None:
                self.journal.record(r)
            self.finished += 1
            if self.bar is not None:
                self.bar.update(1)
            if self.on_progress is not None:
                self.on_progress(self.finished, self.total)

        if self.on_progress is not None:
            self.on_progress(self.finished, self.total)
        if todo:
            executor.run_units(
                scene, model, card, todo, cfg, on_result=on_result, read_config=read_config
            )
        missing = keys - results.keys()
        if missing:
            raise ConfigError(
                f"executor lost {len(missing)} work units (e.g. {sorted(missing)[0]}); "
                "rerun with --resume"
            )
        return list(results.values())


def _cascade(
    run: _Progress,
    executor: Executor,
    scene: Scene,
    model: Detectors,
    card: ModelCard,
    candidates: PixelDetections,
    cfg: DetectConfig,
    read_config: ReadConfig | None,
) -> tuple[PixelDetections, LevelRun]:
    """The refiner on windows around ``candidates``; its boxes replace theirs."""
    from geo_hires.cascade import combine, plan_refine, refine_units

    rule = card.cascade
    if rule is None:
        raise ConfigError(f"model {card.name!r} has no cascade")
    blocks = plan_refine(candidates, rule, (scene.width, scene.height))
    units = refine_units(blocks, level=len(card.levels), batch_size=cfg.batch_size)
    results = run.units(executor, scene, model, card, units, cfg, read_config)
    refined = merge_results(results, card, scene, cfg)
    thr = cfg.score_threshold or card.score_threshold
    cores = tuple((b.x0, b.y0, b.x1, b.y1) for b in blocks)
    level = LevelRun(
        name=REFINE,
        downsample=1,
        blocks=len(blocks),
        skipped_nodata=0,
        pixels=scene.pixels,
        pixels_scanned=sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in cores),
        cores=cores,
    )
    return combine(candidates, refined, rule, thr), level


def journal_for(
    output: str | os.PathLike[str],
    scene: Scene,
    model: FCNDetector | Detectors,
    cfg: DetectConfig,
    aoi: AreaOfInterest | None = None,
) -> Journal:
    """The journal beside ``output``, tied to the scene file, weights, config, bands and AOI."""
    st = os.stat(scene.path)
    identity = {
        "scene": os.path.abspath(scene.path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "weights": Detectors.of(model).digest,
        "config_id": config_id(cfg),
        "bands": list(scene.rgb_bands),
        "aoi": aoi.digest if aoi is not None else None,
    }
    return Journal(f"{os.fspath(output)}.journal", identity)


def run_detect(
    scene_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    model: str | os.PathLike[str] | tuple[FCNDetector | Detectors, ModelCard] = "aircraft_lsn",
    gpkg: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    aoi: str | os.PathLike[str] | dict[str, Any] | None = None,
    coverage: str | os.PathLike[str] | None = None,
) -> DetectResult:
    """Detect in one scene and write its outputs (and a quicklook when asked).

    ``output`` is one path or several; each one's extension picks its format (GeoJSON,
    GeoPackage, GeoParquet, FlatGeobuf: :data:`geo_hires.export.FORMATS`), checked before any
    work; ``gpkg`` adds a GeoPackage. Finished units are journalled beside the first output
    until every output is written, so a killed run continues with ``resume=True``. ``model`` is
    a shipped name, a bundle folder, or an already loaded ``(network, card)`` pair (a
    long-lived service loads each model once).
    ``on_progress``: see :func:`detect_scene`. ``aoi``: a vector file (any format and CRS) or a
    GeoJSON object (WGS84); see :mod:`geo_hires.aoi`. ``coverage``: a file for the area each
    level scanned (see :mod:`geo_hires.export.coverage`); GeoPackage outputs always get it as a
    ``coverage`` layer.
    """
    from geo_hires.export import (
        check_outputs,
        coverage_frame,
        valid_area,
        write_coverage,
        write_output,
        write_quicklook,
    )

    outputs = [output] if isinstance(output, str | os.PathLike) else list(output)
    outputs += [gpkg] if gpkg else []
    check_outputs([*outputs, *([coverage] if coverage else [])])
    cfg = config or DetectConfig()
    net, card = model if isinstance(model, tuple) else load_bundle(model)
    scene, stac = open_input(scene_path, read_config)
    area = load_aoi(aoi, scene) if aoi is not None else None
    journal = journal_for(outputs[0], scene, net, cfg, area)
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
        on_progress=on_progress,
        aoi=area,
    )
    export = ExportConfig(model_name=card.name)
    extra: dict[str, Any] = {
        "config_id": config_id(cfg, export),
        "bands": list(scene.rgb_bands),
        "levels": [
            {"name": r.name, "downsample": r.downsample, "blocks": r.blocks} for r in result.levels
        ],
    }
    extra["zoom"] = result.zoom(cfg.zoom)
    if area is not None:
        extra["aoi"] = {**area.provenance(), "pixels_scanned": result.pixels_scanned}
    if scene.placement is not None:
        extra["georeferencing"] = scene.placement.provenance()
    if stac is not None:
        extra["stac"] = stac
    cover = None
    if coverage or any(Path(p).suffix.lower() == ".gpkg" for p in outputs):
        cover = coverage_frame(
            result.levels,
            scene,
            aoi=area.pixels if area is not None else None,
            valid=valid_area(scene, result.valid_mask),
        )
    for path in outputs:
        write_output(path, result.detections, scene, config=export, extra=extra, coverage=cover)
    if coverage and cover is not None:
        write_coverage(coverage, cover)
    if quicklook:
        write_quicklook(quicklook, result.detections, scene, read_config=read_config)
    journal.remove()
    return result
