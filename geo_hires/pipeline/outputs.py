"""Detect in one scene and write its outputs: what ``geo-hires detect`` and a service job run.

Outputs are checked before any work (formats by extension, no duplicates, a bucket that exists);
finished units are journalled beside the first output until every output is written, so a killed
run continues with ``resume=True``; each file is written under a temporary name and renamed into
place, and an ``s3://`` output is uploaded whole once every output is finished
(:mod:`geo_hires.export.remote`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geo_hires.aoi import AreaOfInterest, load_aoi
from geo_hires.config import ExportConfig, ReadConfig, config_id
from geo_hires.detect.executors import Executor
from geo_hires.detect.journal import journal_for
from geo_hires.detect.options import DetectConfig, DetectOptions, native_bf16
from geo_hires.errors import ConfigError, option
from geo_hires.export import (
    FORMATS,
    check_outputs,
    coverage_frame,
    valid_area,
    write_coverage,
    write_output,
    write_quicklook,
)
from geo_hires.export.counts import counts_frame, part_counts
from geo_hires.export.remote import check_destination, staged
from geo_hires.export.stac import ResultItem, item_outputs, write_result_item
from geo_hires.export.vector import check_kind
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.models.card import bundle_dir, load_card
from geo_hires.models.mlm import MLM_FILE
from geo_hires.pipeline.detect import DetectResult, detect_scene
from geo_hires.scene import Scene, remote
from geo_hires.scene.stac import open_input

__all__ = ["Outputs", "device_type", "native_bf16_of", "run_detect", "run_identity"]

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outputs:
    """What a run writes.

    Attributes:
        files: Detection files, format by extension (GeoJSON, GeoPackage, GeoParquet,
            FlatGeobuf: :data:`geo_hires.export.FORMATS`); a GeoPackage also gets the coverage
            (and, for a multi-polygon AOI, the counts). A ``.stac.json`` file is a STAC item
            describing the others (:mod:`geo_hires.export.stac`).
            Any of them (and the quicklook, the coverage) may be an ``s3://`` object, but
            not a STAC item (its hrefs are relative to the files beside it).
        quicklook: A PNG of the scene with the detections drawn.
        coverage: A file for the area each level scanned (:mod:`geo_hires.export.coverage`).
        timing: Add ``geo_hires.timing`` (the wall seconds and each stage's busy seconds) to
            the provenance. Off by default: equal runs then write equal bytes.
        source, model: What a STAC item links to as the scene and the model (``run_detect``
            fills them in: the input as given, the model as named).
    """

    files: tuple[PathLike, ...]
    quicklook: PathLike | None = None
    coverage: PathLike | None = None
    timing: bool = False
    source: PathLike | None = None
    model: str | None = None

    @classmethod
    def of(cls, value: Outputs | PathLike | Sequence[PathLike]) -> Outputs:
        if isinstance(value, Outputs):
            return value
        files = (value,) if isinstance(value, str | os.PathLike) else tuple(value)
        return cls(files=files)

    def names(self) -> list[str]:
        return [os.fspath(p) for p in self.files]

    def check(self) -> None:
        """Refuse bad outputs before any work: unknown formats, duplicates (the quicklook
        too), and a STAC item with nothing to describe."""
        if not self.files:
            raise ConfigError("name at least one output file (e.g. result.geojson)")
        coverage = [self.coverage] if self.coverage else []
        layers = [k for k in FORMATS if k != ".stac.json"]  # the coverage is a vector layer
        check_kind(option("--coverage"), self.coverage, layers)  # first: the list that fits it
        check_outputs([*self.files, *coverage], quicklook=self.quicklook)
        items, others = item_outputs(self.files)
        if items and any(remote.is_remote(p) for p in [*self.files, self.coverage, self.quicklook]):
            raise ConfigError(
                f"{os.fspath(items[0])}: a STAC item's hrefs are relative to the files it "
                "describes; write the run's outputs to a local folder (and copy it to the bucket "
                "whole), or leave the STAC item out"
            )
        if items and not others:
            raise ConfigError(
                f"{os.fspath(items[0])} describes the detection files of the run; add one, "
                "e.g. -o result.geojson"
            )


def device_type(executor: Executor | None) -> str:
    """Where a local executor runs the scanning network: its device, else CUDA when present."""
    import torch

    device = getattr(executor, "device", None)
    if device is not None:
        return str(torch.device(device).type)
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16_of(executor: Executor | None) -> bool:
    """Whether the device ``executor`` runs the scanning network on does bf16 natively: asked
    of the executor when it can say (Ray asks a worker placed as its actors are), else
    :func:`~geo_hires.detect.options.native_bf16` of :func:`device_type`."""
    ask = getattr(executor, "native_bf16", None)
    if ask is not None:
        return bool(ask())
    return native_bf16(device_type(executor))


def _provenance(
    result: DetectResult, scene: Scene, cfg: DetectConfig, export: ExportConfig,
    area: AreaOfInterest | None, stac: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The collection metadata every output carries beside the detections."""
    extra: dict[str, Any] = {
        "config_id": config_id(cfg, export),
        "bands": list(scene.rgb_bands),
        "levels": [
            {"name": r.name, "downsample": r.downsample, "blocks": r.blocks} for r in result.levels
        ],
        "zoom": result.zoom(),
        "precision": cfg.precision,
    }
    if area is not None:
        extra["aoi"] = {**area.provenance(), "pixels_scanned": result.pixels_scanned}
    if scene.placement is not None:
        extra["georeferencing"] = scene.placement.provenance()
    if stac is not None:
        extra["stac"] = stac
    return extra


def _model_ref(named: str, bundle: Bundle) -> str:
    """What a STAC item names as the model: the options' model (a shipped name, a folder)
    when it is the bundle that ran, else the bundle's own name (a bundle passed beside options
    that name another: the default's MLM item would be the wrong provenance)."""
    try:
        return named if load_card(named).name == bundle.name else bundle.name
    except ConfigError:  # a bare .pt: no card, no item
        return bundle.name


def _model_item(model: str) -> Path | None:
    """The bundle's MLM item, when its folder has one (a bare ``.pt`` has no folder)."""
    try:
        path = bundle_dir(model) / MLM_FILE
    except ConfigError:
        return None
    return path if path.is_file() else None


def _write(
    out: Outputs, result: DetectResult, scene: Scene, area: AreaOfInterest | None,
    export: ExportConfig, extra: dict[str, Any], read_config: ReadConfig | None,
) -> None:  # fmt: skip
    items, files = item_outputs(out.files)
    cover = None
    if out.coverage or any(Path(p).suffix.lower() == ".gpkg" for p in files):
        cover = coverage_frame(
            result.levels,
            scene,
            aoi=area.pixels if area is not None else None,
            valid=valid_area(scene, result.valid_mask),
        )
    per_part = part_counts(area, result.detections)
    counts = counts_frame(per_part, area, scene) if per_part and area is not None else None
    for path in files:
        write_output(path, result.detections, scene, config=export, extra=extra,
                     coverage=cover, counts=counts)  # fmt: skip
    if out.coverage and cover is not None:
        write_coverage(out.coverage, cover)
    if out.quicklook:
        write_quicklook(out.quicklook, result.detections, scene, read_config=read_config)
    for item in items:
        ref = ResultItem(
            scene=scene, source=out.source or scene.path, dets=result.detections,
            model=export.model_name, model_item=_model_item(out.model or export.model_name),
            files=tuple(files), coverage=Path(out.coverage) if out.coverage else None,
            quicklook=Path(out.quicklook) if out.quicklook else None, provenance=extra,
            part_counts=per_part,
        )  # fmt: skip
        write_result_item(item, ref)


def _stand_ins(out: Outputs, local: list[PathLike | None]) -> Outputs:
    """``out`` with the local files :func:`~geo_hires.export.remote.staged` gave for it."""
    n = len(out.files)
    files = tuple(p for p in local[:n] if p is not None)
    return dataclasses.replace(out, files=files, coverage=local[n], quicklook=local[n + 1])


@dataclasses.dataclass(frozen=True)
class _Opened:
    """One run's scene (and its STAC item), AOI on it, stage settings and read budget."""

    scene: Scene
    stac: dict[str, Any] | None
    area: AreaOfInterest | None
    cfg: DetectConfig
    reading: ReadConfig

    @classmethod
    def of(
        cls, scene_path: PathLike, opts: DetectOptions, bundle: Bundle,
        config: DetectConfig | None, read_config: ReadConfig | None, executor: Executor | None,
    ) -> _Opened:  # fmt: skip
        if config is not None:
            opts.moot_given(config)
        reading = opts.read_config(read_config)
        scene, stac = open_input(scene_path, reading)  # a bad scene fails before any probe
        area = load_aoi(opts.aoi, scene) if opts.aoi is not None else None
        cfg = config or opts.detect_config(bundle.card, _native(opts, bundle, executor))
        return cls(scene, stac, area, cfg, reading)


def _native(opts: DetectOptions, bundle: Bundle, executor: Executor | None) -> bool:
    """:func:`native_bf16_of` where a run needs it: ``--precision auto`` for a scanning network,
    or a Ray run asked for CUDA (which its probe checks on a worker). Ray asks a worker placed
    as an actor: a task that waits for a node like the actors, so it is not asked for nothing."""
    device = getattr(getattr(executor, "config", None), "device", None)
    if (opts.precision == "auto" and bundle.card.arch is not None) or device == "cuda":
        return native_bf16_of(executor)
    return False


def run_identity(
    scene_path: PathLike, output: PathLike, options: DetectOptions, *, bundle: Bundle,
    read_config: ReadConfig | None = None, executor: Executor | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What the result of :func:`run_detect` depends on, as its journal records it: the scene
    file (path, size, date or ETag), the model (weights, plan, policy), the stage settings, the
    bands and the AOI's content. A batch compares it to skip only a scene truly done before
    (a retrained model, a scene delivered again or an AOI edited in place are not)."""
    run = _Opened.of(scene_path, options, bundle, None, read_config, executor)
    return journal_for(output, run.scene, bundle, run.cfg, run.area).identity


def _check_run(scene_path: object, options: object) -> None:
    """Misuses a type checker would catch, said as one clear error to an untyped caller (they
    failed deep inside, as an AttributeError or a TypeError of ``os.fspath``)."""
    if not isinstance(options, DetectOptions):
        raise ConfigError(
            f"run_detect takes DetectOptions, not a {type(options).__name__}: "
            "DetectOptions(**values), or DetectOptions.from_mapping(values)"
        )
    if not isinstance(scene_path, str | os.PathLike):
        opened = " (an opened Scene goes to detect_scene)" if isinstance(scene_path, Scene) else ""
        raise ConfigError(
            f"run_detect takes a scene's path or URL, not a {type(scene_path).__name__}{opened}"
        )


def run_detect(
    scene_path: PathLike,
    outputs: Outputs | PathLike | Sequence[PathLike],
    options: DetectOptions | None = None,
    *,
    bundle: Bundle | None = None,
    config: DetectConfig | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> DetectResult:
    """Detect in one scene with ``options`` and write ``outputs``.

    ``bundle``: an already loaded bundle, which is the model run whatever ``options.model``
    names (a service or a batch loads each model once; default: ``options.model`` loaded
    here). ``config``: stage settings beyond the options (default: ``options.detect_config``
    for the bundle and the executor's device). ``read_config``: the read budget and driver
    rules, to which the options add their bands, STAC asset and RPC height. ``resume``: skip
    the units a journal of an interrupted run to the same outputs holds. ``on_progress``,
    ``progress``: see :func:`~geo_hires.pipeline.detect.detect_scene`.

    Raises:
        ConfigError: Options or arguments that cannot run (said before any work).
        SceneReadError: The scene cannot be found or read.
        SceneTooLargeError: The scene is over ``ReadConfig.max_scene_pixels``.
        GeoHiresError: The root of these and of every other error the library raises.
    """
    opts = DetectOptions() if options is None else options
    _check_run(scene_path, opts)
    out = Outputs.of(outputs)
    out.check()
    check_destination([*out.files, out.coverage, out.quicklook])
    bundle = bundle or load_bundle(opts.model)
    run = _Opened.of(scene_path, opts, bundle, config, read_config, executor)
    journal = journal_for(out.files[0], run.scene, bundle, run.cfg, run.area)
    result = detect_scene(
        run.scene, bundle, run.cfg, read_config=run.reading, aoi=run.area, executor=executor,
        journal=journal, resume=resume, on_progress=on_progress, progress=progress,
    )  # fmt: skip
    export = ExportConfig(model_name=bundle.name)
    extra = _provenance(result, run.scene, run.cfg, export, run.area, run.stac)
    if out.timing:
        extra["timing"] = result.timing()
    out = dataclasses.replace(
        out, source=out.source or scene_path, model=out.model or _model_ref(opts.model, bundle)
    )
    with staged([*out.files, out.coverage, out.quicklook]) as local:
        _write(_stand_ins(out, local), result, run.scene, run.area, export, extra, run.reading)
    journal.remove()
    return dataclasses.replace(result, identity=journal.identity)
