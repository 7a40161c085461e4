"""Commands on scenes and labels: ``info``, ``plan``, ``synth``, ``convert``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from geo_hires.commands.args import (
    SCENE_HELP,
    add_detect_args,
    add_scene_args,
    detect_options,
    read_config,
)

if TYPE_CHECKING:
    from geo_hires.detect.levels import LevelRun

__all__ = ["add_commands"]


def _cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.export.geojson import crs_label
    from geo_hires.scene.stac import open_input

    s, stac = open_input(args.scene, read_config(args))
    info: dict[str, Any] = {
        "path": s.path,
        "width": s.width,
        "height": s.height,
        "bands": s.count,
        "dtype": s.dtype,
        "crs": crs_label(s.crs_wkt),
        "gsd_m": s.gsd_m,
        "nodata": s.nodata,
        "has_mask": s.has_mask,
        "colorinterp": list(s.colorinterp),
        "rgb_bands": list(s.rgb_bands),
        "overviews": list(s.overviews),
    }
    if s.placement is not None:
        info["georeferencing"] = s.placement.provenance()
    if stac is not None:
        info["stac"] = stac
    out.write(json.dumps(info, indent=2) + "\n")
    return 0


def _level_line(run: LevelRun, units: int, gsd_m: float | None) -> str:
    d = run.downsample
    gsd = f"{gsd_m * d:.3f} m" if gsd_m else "-"
    scale = f"x{d:g}" if d >= 1 else f"up x{round(1 / d)}"
    head = f"  level {run.name:<10} {scale:<6} GSD {gsd:>9}"
    skips = f"skipped(nodata) {run.skipped_nodata}  skipped(AOI) {run.skipped_aoi}"
    folded = f"  ({'+'.join(run.folded)} folded in: same pixels)" if run.folded else ""
    if run.windows is not None:
        return f"{head}  zoom windows {run.windows:>6}  {skips}  (chosen after the coarse pass)\n"
    return f"{head}  blocks {run.blocks:>6}  {skips}  units {units}{folded}\n"


def _device_type(choice: str) -> str:
    """The device type ``detect --device`` would run on: for ``auto``, CUDA where torch finds a
    GPU, asked only where an NVIDIA driver is loaded (plan stays free of torch's import)."""
    if choice != "auto":
        return "cuda" if choice == "cuda" else "cpu"
    if not Path("/proc/driver/nvidia/version").exists():
        return "cpu"
    from geo_hires.pipeline.outputs import device_type

    return device_type(None)


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    import numpy as np

    from geo_hires.aoi import load_aoi
    from geo_hires.commands.args import run_bundle
    from geo_hires.detect.options import native_bf16
    from geo_hires.detect.zoom import require_policy
    from geo_hires.models.card import load_card
    from geo_hires.pipeline.detect import ScenePlan, warn_nothing_to_zoom
    from geo_hires.scene.stac import open_input

    options = detect_options(args)
    bare = run_bundle(args)
    card = bare.card if bare is not None else load_card(options.model)
    native = native_bf16(_device_type(args.device))
    cfg = options.detect_config(card, native)
    require_policy(cfg.zoom, card)  # as detect refuses it
    scene, _ = open_input(args.scene, options.read_config(read_config(args)))
    aoi = load_aoi(options.aoi, scene) if options.aoi is not None else None
    plan = ScenePlan.make(scene, card, cfg, aoi=aoi)
    if plan.coarse is None and cfg.zoom.selective:
        warn_nothing_to_zoom(cfg.zoom, card.name, scene)
    units, runs = plan.first()
    if plan.coarse is not None:
        runs += plan.fine(lambda _li, cores: np.ones(len(cores), bool))[1]
    gsd = f"{scene.gsd_m:.3f} m" if scene.gsd_m else "unknown"
    out.write(f"{Path(scene.path).name}: {scene.width}x{scene.height} px, GSD {gsd}, "
              f"model {card.name}, precision {plan.config.precision}\n")  # fmt: skip
    names = [r.name for r in card.levels]
    for run in sorted(runs, key=lambda r: names.index(r.name)):
        count = sum(u.level == names.index(run.name) for u in units)
        out.write(_level_line(run, count, scene.gsd_m))
    if card.cascade is not None:
        rule = card.cascade
        out.write(f"  refine: {rule.window} px windows around candidates scoring >= "
                  f"{rule.gate_threshold} (after the scan)\n")  # fmt: skip
    scanned = sum(r.blocks - r.skipped_nodata - r.skipped_aoi for r in runs if r.windows is None)
    out.write(f"  total: {scanned} blocks to scan, {len(units)} units\n")
    return 0


def _cmd_synth(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.config import ExportConfig, ReadConfig
    from geo_hires.export import write_geojson
    from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic

    spec = SynthSpec(
        width=args.width,
        height=args.height,
        seed=args.seed,
        density=Density(args.density),
        nodata=args.nodata,
        gsd_m=args.gsd,
    )
    _check_synth_outputs(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # as every other output's
    truth = write_synthetic(args.out, spec, progress=sys.stderr.isatty())
    if args.truth:
        scene = open_scene(args.out, config=ReadConfig(max_scene_pixels=spec.width * spec.height))
        write_geojson(args.truth, truth, scene, config=ExportConfig(model_name="synthetic-truth"))
    out.write(f"wrote {args.out} ({spec.width}x{spec.height}, {len(truth)} objects)\n")
    return 0


def _check_synth_outputs(args: argparse.Namespace) -> None:
    """A local GeoTIFF and a GeoJSON beside it, before any work."""
    from geo_hires.errors import ConfigError
    from geo_hires.export.vector import check_kind
    from geo_hires.scene.remote import is_remote

    for path in (args.out, args.truth):
        if path and is_remote(path):
            raise ConfigError(f"{path}: synth writes local files; copy them to the bucket after")
    if Path(args.out).suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{args.out!r}: synth writes a GeoTIFF; name it .tif")
    check_kind("--truth", args.truth, (".geojson", ".json"))
    from geo_hires.export.remote import check_destination

    check_destination([args.out, args.truth])


def _cmd_convert(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.config import ExportConfig
    from geo_hires.errors import NoTruthWarning
    from geo_hires.export import write_geojson, write_gpkg, write_quicklook
    from geo_hires.export.remote import staged
    from geo_hires.labels import read_labels
    from geo_hires.scene.stac import open_input

    _check_convert_outputs(args)
    scene = open_input(args.scene, read_config(args))[0]  # a raster, or a STAC item's asset
    labels = read_labels(args.labels, image=Path(scene.path).name)
    dets = labels.to_pixels(scene)
    if not len(dets):  # as eval says of such a truth: an empty layer is no answer
        read = len(labels.rings)
        why = f"its {read} objects lie off the scene" if read else "none names this scene"
        warnings.warn(f"{args.labels}: no feature to convert ({why})", NoTruthWarning,
                      stacklevel=2)  # fmt: skip
    cfg = ExportConfig(model_name=args.model_name)
    with staged([args.output, args.gpkg, args.quicklook]) as (output, gpkg, quicklook):
        assert output is not None  # -o is required
        write_geojson(output, dets, scene, config=cfg)
        if gpkg:
            write_gpkg(gpkg, dets, scene, config=cfg)
        if quicklook:
            write_quicklook(quicklook, dets, scene)
    out.write(f"wrote {len(dets)} features to {args.output}\n")
    return 0


def _check_convert_outputs(args: argparse.Namespace) -> None:
    """Each file in the format its flag writes, and no two the same, before any work."""
    from geo_hires.export.remote import check_destination
    from geo_hires.export.vector import check_kind, check_outputs

    check_kind("-o", args.output, (".geojson", ".json"))
    check_kind("--gpkg", args.gpkg, (".gpkg",))
    check_outputs([args.output, *([args.gpkg] if args.gpkg else [])], quicklook=args.quicklook)
    check_destination([args.output, args.gpkg, args.quicklook])


def add_commands(sub: Any) -> None:
    """Add ``info``, ``plan``, ``synth`` and ``convert`` to the ``geo-hires`` sub-parsers."""
    p = sub.add_parser("info", help="describe a scene (size, CRS, GSD, bands)")
    p.add_argument("scene", help=SCENE_HELP)
    add_scene_args(p)
    p.set_defaults(_handler=_cmd_info)
    p = sub.add_parser(
        "plan", help="print the levels, blocks, units and zoom windows detect would run"
    )
    p.add_argument("scene", help=SCENE_HELP)
    add_detect_args(p)
    p.set_defaults(_handler=_cmd_plan)
    p = sub.add_parser("synth", help="write a synthetic scene with ground truth")
    p.add_argument("out", help="GeoTIFF to write")
    p.add_argument("--width", type=int, required=True, help="width in pixels")
    p.add_argument("--height", type=int, required=True, help="height in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    p.add_argument(
        "--density", choices=["sparse", "dense"], default="sparse", help="objects per area"
    )
    p.add_argument("--nodata", action="store_true", help="add a nodata collar")
    p.add_argument("--gsd", type=float, default=0.5, help="metres per pixel")
    p.add_argument("--truth", help="write the ground truth GeoJSON here")
    p.set_defaults(_handler=_cmd_synth)
    p = sub.add_parser("convert", help="labels (any format) → GeoJSON / GeoPackage / quicklook")
    p.add_argument("labels", help="label file (GeoJSON, CSV, Airbus CSV, VOC XML, DOTA txt)")
    p.add_argument("--scene", required=True, help="the scene the labels belong to")
    p.add_argument("-o", "--output", required=True, help="GeoJSON to write (WGS84)")
    p.add_argument("--gpkg", help="also write a GeoPackage (scene CRS)")
    p.add_argument("--quicklook", help="PNG of the scene with the labels drawn")
    p.add_argument("--model-name", default="labels", help="value of the 'model' property")
    add_scene_args(p)
    p.set_defaults(_handler=_cmd_convert)
