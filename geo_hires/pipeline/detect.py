"""Detect in one scene: plan, scan, zoom, merge, refine — the stages as a short script.

A run plans its units (:mod:`geo_hires.detect.plan`), runs them through an executor with a
journal (:class:`~geo_hires.detect.executors.UnitLoop`), and merges the results by key
(:mod:`geo_hires.merge`), so every executor gives the same bytes. A zoomed run scans the
coarse level first and lets the zoom choose the fine windows from its evidence; a cascade
bundle then runs its refiner on windows around the merged candidates.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from geo_hires.aoi import AreaOfInterest
from geo_hires.config import ExportConfig, ReadConfig
from geo_hires.detect.cascade import combine, plan_refine, refine_units
from geo_hires.detect.executors import Executor, LocalExecutor, UnitLoop
from geo_hires.detect.journal import Journal, UnitResult
from geo_hires.detect.levels import (
    REFINE,
    LevelRun,
    coarsest,
    core_window,
    level_names,
    refine_downsample,
    xyxy,
)
from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.plan import MaskFn, Select, Unit, mask_lookup, plan_units
from geo_hires.detect.zoom import check_policy, zoom_select
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, NothingToZoomWarning, option
from geo_hires.merge import merge_results
from geo_hires.models.bundle import Bundle
from geo_hires.models.card import ModelCard
from geo_hires.scene import Scene, SceneReader

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["DetectResult", "ScenePlan", "detect_scene", "warn_nothing_to_zoom"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DetectResult:
    """Merged detections (level-0 pixels) and what it took to get them.

    Attributes:
        detections: The merged detections, in the scene's level-0 pixels (:meth:`frame`
            puts them on the map).
        levels: What each level scanned (blocks, pixels, the zoom's windows).
        seconds: Wall seconds of the run (model loading and writing outputs excluded).
        megapixels: The scene's size.
        resumed_units: Work units taken from a journal instead of computed.
        valid_mask: Where the scene has data (a decimated view), if it has a mask.
        zoom_config: The zoom the run used.
        aoi: Whether an area of interest restricted the scan.
    """

    detections: PixelDetections
    levels: tuple[LevelRun, ...]
    seconds: float
    megapixels: float
    resumed_units: int = 0
    valid_mask: npt.NDArray[np.bool_] | None = None
    zoom_config: ZoomConfig = dataclasses.field(default_factory=ZoomConfig)
    aoi: bool = False
    stage_seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Busy seconds of ``read``, ``forward``, ``decode`` (summed over the units this run
    computed, wherever they ran) and ``merge``."""
    identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """What the result depends on, as its journal records it (scene file, model, settings,
    bands, AOI); set by :func:`~geo_hires.pipeline.outputs.run_detect`, empty otherwise."""

    def timing(self) -> dict[str, Any]:
        """Where the time went: the wall seconds of the run and each stage's busy seconds and
        share of them. Reads run ahead on their own thread (or on Ray actors), so the shares
        may add up to more than 1: what overlaps is hidden."""
        wall = max(self.seconds, 1e-9)
        stages = {k: round(v, 3) for k, v in sorted(self.stage_seconds.items())}
        shares = {k: round(v / wall, 3) for k, v in sorted(self.stage_seconds.items())}
        return {"wall_s": round(self.seconds, 3), "busy_s": stages, "share_of_wall": shares}

    @property
    def blocks(self) -> int:
        """Blocks (and windows) scanned, summed over levels."""
        return sum(lv.blocks for lv in self.levels)

    def frame(self, scene: Scene, *, model_name: str = ExportConfig.model_name) -> gpd.GeoDataFrame:
        """The detections as a GeoDataFrame in ``scene``'s CRS (no CRS: pixels), a polygon a
        detection with its class, score, level and ``model_name`` (the bundle's name, as the
        output files say), in the files' order: the rows the run's GeoPackage holds."""
        from geo_hires.export.vector import detections_frame

        return detections_frame(self.detections, scene, config=ExportConfig(model_name=model_name))

    @property
    def pixels_scanned(self) -> int:
        """Level-0 pixels of the scanned block cores, summed over levels."""
        return sum(lv.pixels_scanned for lv in self.levels)

    @property
    def pixels_planned(self) -> int:
        """Level-0 pixels of the scene, once per level (what a scan without AOI covers)."""
        return sum(lv.pixels for lv in self.levels)

    def zoom(self) -> dict[str, Any]:
        """What the fine pass processed: the zoom mode and budget, the share of fine windows
        scanned and the share of the scene's pixels the fine levels read."""
        zoom = self.zoom_config
        scan = [lv for lv in self.levels if lv.name != REFINE]
        top = max((lv.downsample for lv in scan), default=1)
        fine = [lv for lv in scan if lv.downsample < top or lv.windows is not None]
        windows = sum(lv.windows if lv.windows is not None else len(lv.cores) for lv in fine)
        pixels = sum(lv.pixels for lv in fine)
        chosen = sum(len(lv.cores) for lv in fine)
        return {
            "mode": zoom.mode,
            "budget": zoom.budget,
            "fine_windows": chosen,
            "fine_windows_fraction": round(chosen / windows, 4) if windows else 0.0,
            "fine_pixels_fraction": round(sum(lv.pixels_scanned for lv in fine) / pixels, 4)
            if pixels
            else 0.0,
        }

    def summary(self, scene: str, outputs: Sequence[str]) -> str:
        """The one line ``geo-hires detect`` prints: levels, counts, time, what was saved."""
        per_level = ", ".join(lv.describe() for lv in self.levels)
        more = f", {self.resumed_units} units resumed" if self.resumed_units else ""
        if self.zoom_config.selective:
            z = self.zoom()
            more += (
                f", zoom {z['mode']}: {z['fine_windows']} fine windows "
                f"({100 * z['fine_windows_fraction']:.0f} %, "
                f"{100 * z['fine_pixels_fraction']:.0f} % of fine pixels)"
            )
        if self.aoi:
            planned, scanned = self.pixels_planned / 1e6, self.pixels_scanned / 1e6
            more += (
                f", AOI: {scanned:.1f} of {planned:.1f} MP scanned "
                f"({100 * (1 - scanned / max(planned, 1e-9)):.0f} % saved)"
            )
        windows = sum(lv.scanned for lv in self.levels)
        rate = f"{self.megapixels / max(self.seconds, 1e-9):.1f} MP/s" if windows else "no scan"
        return (
            f"{Path(scene).name}: {windows} windows [{per_level}], "
            f"{len(self.detections)} detections, {self.seconds:.1f} s, {rate}{more} -> "
            f"{', '.join(outputs)}"
        )


def _valid_mask(scene: Scene, read_config: ReadConfig | None) -> npt.NDArray[np.bool_] | None:
    """The decimated (<= 1 MP) validity mask, read once: it skips blocks and bounds coverage."""
    if not scene.has_mask:
        return None
    with SceneReader(scene, config=read_config) as reader:
        return reader.read_overview(1_000_000).valid


def _ordered(runs: Sequence[LevelRun], bundle: Bundle) -> tuple[LevelRun, ...]:
    names = level_names(bundle.card)
    return tuple(sorted(runs, key=lambda r: names.index(r.name)))


def _merge(loop: UnitLoop, results: Sequence[UnitResult]) -> PixelDetections:
    start = time.perf_counter()
    merged = merge_results(results, loop.bundle.card, loop.scene, loop.cfg)
    loop.add_seconds({"merge": time.perf_counter() - start})
    return merged


def _cascade(
    loop: UnitLoop, candidates: PixelDetections, threshold: float
) -> tuple[PixelDetections, LevelRun | None]:
    """The refiner on windows around ``candidates``, read at its GSD; its boxes replace
    theirs. A scene too coarse for the refiner keeps the candidates (with a warning) that
    reach ``threshold``: they were scanned at the gate, which may be lower."""
    scene, card, cfg = loop.scene, loop.bundle.card, loop.cfg
    rule = card.cascade
    assert rule is not None
    d = refine_downsample(card, scene)
    if math.isinf(d):
        return candidates.take(candidates.scores >= threshold), None
    blocks = plan_refine(candidates, rule, (scene.width, scene.height), d)
    units = refine_units(blocks, level=len(card.levels), batch_size=cfg.batch_size, downsample=d)
    refined = _merge(loop, loop.run(units))
    cores = tuple(xyxy(core_window(b, d, scene)) for b in blocks)
    level = LevelRun(
        name=REFINE, downsample=d, blocks=len(blocks), skipped_nodata=0, pixels=scene.pixels,
        pixels_scanned=sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in cores), cores=cores,
    )  # fmt: skip
    return combine(candidates, refined, rule, threshold), level


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ScenePlan:
    """How a run cuts one scene: what ``geo-hires plan`` prints and :func:`detect_scene` runs.

    :meth:`first` is every level's units (a zoomed run: the coarsest level's alone, which
    leaves the evidence); :meth:`fine` is a zoomed run's fine levels, cut into the zoom's
    windows, of which ``select`` keeps the chosen ones.
    """

    scene: Scene
    card: ModelCard
    config: DetectConfig
    valid: npt.NDArray[np.bool_] | None = None
    aoi: AreaOfInterest | None = None

    @classmethod
    def make(
        cls, scene: Scene, card: ModelCard, config: DetectConfig, *,
        read_config: ReadConfig | None = None, aoi: AreaOfInterest | None = None,
    ) -> ScenePlan:  # fmt: skip
        """The plan, with the scene's decimated validity mask read once (it skips nodata
        blocks and bounds the coverage)."""
        valid = _valid_mask(scene, read_config)
        return cls(scene=scene, card=card, config=config, valid=valid, aoi=aoi)

    @property
    def has_data(self) -> MaskFn | None:
        return mask_lookup(self.valid, self.scene) if self.valid is not None else None

    @property
    def in_aoi(self) -> MaskFn | None:
        return self.aoi.touches_window() if self.aoi is not None else None

    @property
    def coarse(self) -> int | None:
        """The level a zoomed run scans first (``None``: no zoom, every level at once)."""
        if not self.config.zoom.selective:
            return None
        return coarsest(self.card, self.scene, self.config)

    def first(self) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
        only = None if self.coarse is None else (self.coarse,)
        return plan_units(self.scene, self.card, self.config, has_data=self.has_data,
                          in_aoi=self.in_aoi, only=only)  # fmt: skip

    def fine(self, select: Select) -> tuple[tuple[Unit, ...], tuple[LevelRun, ...]]:
        only = tuple(i for i in range(len(self.card.levels)) if i != self.coarse)
        return plan_units(self.scene, self.card, self.config, has_data=self.has_data,
                          in_aoi=self.in_aoi, only=only, select=select)  # fmt: skip


def _unzoomed(zoom: ZoomConfig, bundle: Bundle, scene: Scene) -> ZoomConfig:
    """A run with one level scanned has nothing to zoom into: a selective mode is said to be
    moot (once, here) and the run records that it scanned every window (``all``)."""
    if not zoom.selective:
        return zoom
    if zoom.mode == "rl":
        check_policy(zoom, bundle)  # asked of a bundle without a policy: refused as elsewhere
    warn_nothing_to_zoom(zoom, bundle.name, scene)
    return dataclasses.replace(zoom, mode="all", budget=None)


def warn_nothing_to_zoom(zoom: ZoomConfig, model: str, scene: Scene) -> None:
    """Say that a selective ``zoom`` is moot: ``model`` scans one level of ``scene``."""
    warnings.warn(
        f"{option('--zoom', zoom.mode)}: {model} scans one level of {Path(scene.path).name}, so "
        "there is nothing to zoom into; every window is scanned",
        NothingToZoomWarning,
        stacklevel=4,
    )


def _check_call(
    given: tuple[object, object], config: object, aoi: object, journal: Journal | None,
    resume: bool,
) -> None:  # fmt: skip
    """Misuses a type checker would catch, said as one clear error to an untyped caller."""
    scene, bundle = given
    if not isinstance(scene, Scene):
        raise ConfigError(
            f"detect_scene takes a Scene, not a {type(scene).__name__}: open_scene(path) opens "
            "one (or call run_detect with the path)"
        )
    if not isinstance(bundle, Bundle):
        raise ConfigError(
            f"detect_scene takes a Bundle, not a {type(bundle).__name__}: load_bundle(name) "
            "loads one"
        )
    if config is not None and not isinstance(config, DetectConfig):
        raise ConfigError(
            f"detect_scene takes a DetectConfig, not a {type(config).__name__}: "
            "DetectOptions(...).detect_config(bundle.card) makes one (or call run_detect)"
        )
    if aoi is not None and not isinstance(aoi, AreaOfInterest):
        raise ConfigError("aoi: an AreaOfInterest, as geo_hires.aoi.load_aoi(source, scene) makes")
    if resume and journal is None:
        raise ConfigError("resume needs the journal to resume from (detect.journal.journal_for)")


def detect_scene(
    scene: Scene,
    bundle: Bundle,
    config: DetectConfig | None = None,
    *,
    read_config: ReadConfig | None = None,
    aoi: AreaOfInterest | None = None,
    executor: Executor | None = None,
    journal: Journal | None = None,
    resume: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    progress: bool = False,
) -> DetectResult:
    """Detect objects over every level of ``bundle`` in ``scene`` and merge them.

    ``aoi``: scan only blocks whose core touches it, keep detections centred in it.
    ``journal``: records finished units; with ``resume`` those are not run again.
    ``on_progress(done, total)``: before the first unit and after each; an exception it raises
    stops the run (finished units stay journalled). ``progress``: a progress bar on stderr.
    """
    _check_call((scene, bundle), config, aoi, journal, resume)
    cfg, card = config or DetectConfig(), bundle.card
    if cfg.zoom.mode == "rl":  # before the coarse pass (minutes on a large scene), not after
        check_policy(cfg.zoom, bundle)
    start = time.perf_counter()
    plan = ScenePlan.make(scene, card, cfg, read_config=read_config, aoi=aoi)
    units, runs = plan.first()
    done = journal.start(resume=resume) if journal is not None else {}
    loop = UnitLoop(executor=executor or LocalExecutor(), scene=scene, bundle=bundle, cfg=cfg,
                    read_config=read_config, done=done, journal=journal,
                    on_progress=on_progress)  # fmt: skip
    bar = tqdm(desc=Path(scene.path).name, unit="unit", disable=not progress, leave=False)
    zoom = cfg.zoom if plan.coarse is not None else _unzoomed(cfg.zoom, bundle, scene)
    with bar:
        loop.bar = bar
        results = loop.run(units)
        if plan.coarse is not None:  # zoom: the fine levels only where chosen
            units, fine_runs = plan.fine(zoom_select(cfg.zoom, results, bundle, scene.gsd_m))
            results += loop.run(units)
            runs = _ordered((*runs, *fine_runs), bundle)
        merged = _merge(loop, results)
        if card.cascade is not None:
            merged, refine_run = _cascade(loop, merged, cfg.score_threshold or card.score_threshold)
            runs = (*runs, refine_run) if refine_run is not None else runs
    return DetectResult(
        detections=aoi.keep(merged) if aoi is not None else merged,
        levels=runs,
        seconds=time.perf_counter() - start,
        megapixels=scene.pixels / 1e6,
        resumed_units=len(done),
        valid_mask=plan.valid,
        zoom_config=zoom,
        aoi=aoi is not None,
        stage_seconds=dict(loop.seconds),
    )
