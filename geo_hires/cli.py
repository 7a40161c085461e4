"""The ``geo-hires`` command line.

Every deliberate error (:class:`~geo_hires.errors.GeoHiresError`) becomes one line on stderr and
exit status 2; warnings become one line each. Set ``GEO_HIRES_DEBUG=1`` to get tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from geo_hires.config import ExportConfig, ReadConfig, ScaleLevel, SmallScenePolicy, TilingConfig
from geo_hires.errors import ConfigError, GeoHiresError

__all__ = ["main", "parse_levels"]


def parse_levels(text: str) -> tuple[ScaleLevel, ...]:
    """Parse ``NAME:WINDOW[:OVERLAP[:FACTOR|GSDm]]`` items separated by commas.

    Example: ``full:512:0.25,coarse:512:0.25:4`` or ``coarse:512:0.25:2.0m`` (target GSD).
    """
    levels = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if not 2 <= len(parts) <= 4:
            raise ConfigError(f"level {item!r}: expected NAME:WINDOW[:OVERLAP[:FACTOR|GSDm]]")
        try:
            kw: dict[str, Any] = {"name": parts[0], "window": int(parts[1])}
            if len(parts) > 2:
                kw["overlap"] = float(parts[2])
            if len(parts) > 3 and parts[3].endswith("m"):
                kw["target_gsd_m"] = float(parts[3][:-1])
            elif len(parts) > 3:
                kw["downsample"] = int(parts[3])
        except ValueError as exc:
            raise ConfigError(f"level {item!r}: {exc}") from exc
        levels.append(ScaleLevel(**kw))
    return tuple(levels)


def _parse_bands(text: str | None) -> tuple[int | str, ...] | None:
    """``3,2,1`` or ``red,green,blue`` (names resolve when the scene is opened)."""
    if not text:
        return None
    items = [t.strip() for t in text.split(",")]
    return tuple(int(t) if t.isdigit() else t for t in items)


def _read_config(args: argparse.Namespace) -> ReadConfig:
    kw: dict[str, Any] = {
        "bands": _parse_bands(getattr(args, "bands", None)),
        "rpc_height_m": getattr(args, "rpc_height", 0.0),
        "stac_asset": getattr(args, "asset", None),
    }
    if args.max_pixels:
        kw["max_scene_pixels"] = args.max_pixels
    return ReadConfig(**kw)


def _cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.export.geojson import crs_label
    from geo_hires.scene.stac import open_input

    s, stac = open_input(args.scene, _read_config(args))
    info = {
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


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.scene import SceneReader
    from geo_hires.scene.stac import open_input
    from geo_hires.tiling import plan_tiles

    scene, _ = open_input(args.scene, _read_config(args))
    cfg = TilingConfig(
        levels=parse_levels(args.levels), small_scene=SmallScenePolicy(args.small_scene)
    )
    valid = None
    if scene.has_mask:
        with SceneReader(scene) as reader:
            valid = reader.read_overview(1_000_000).valid
    plans = plan_tiles(scene, cfg, valid=valid)
    gsd = f"{scene.gsd_m:.3f} m" if scene.gsd_m else "unknown"
    out.write(f"{Path(scene.path).name}: {scene.width}x{scene.height} px, GSD {gsd}\n")
    for p in plans:
        eff = f"{scene.gsd_m * p.downsample:.3f} m" if scene.gsd_m else "-"
        out.write(
            f"  level {p.level.name:<10} window {p.level.window:>5} px  "
            f"overlap {p.level.overlap:.2f}  downsample {p.downsample:>3}  GSD {eff:>10}  "
            f"windows {len(p.tiles):>6}  "
            f"skipped(nodata) {p.skipped_nodata}\n"
        )
    out.write(f"  total windows: {sum(len(p.tiles) for p in plans)}\n")
    return 0


def _cmd_synth(args: argparse.Namespace, out: TextIO) -> int:
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
    truth = write_synthetic(args.out, spec, progress=sys.stderr.isatty())
    if args.truth:
        scene = open_scene(args.out, config=ReadConfig(max_scene_pixels=spec.width * spec.height))
        write_geojson(args.truth, truth, scene, config=ExportConfig(model_name="synthetic-truth"))
    out.write(f"wrote {args.out} ({spec.width}x{spec.height}, {len(truth)} objects)\n")
    return 0


def _cmd_convert(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.export import write_geojson, write_gpkg, write_quicklook
    from geo_hires.labels import read_labels
    from geo_hires.scene import open_scene

    scene = open_scene(args.scene, config=_read_config(args))
    dets = read_labels(args.labels, image=Path(scene.path).name).to_pixels(scene)
    cfg = ExportConfig(model_name=args.model_name)
    write_geojson(args.output, dets, scene, config=cfg)
    if args.gpkg:
        write_gpkg(args.gpkg, dets, scene, config=cfg)
    if args.quicklook:
        write_quicklook(args.quicklook, dets, scene)
    out.write(f"wrote {len(dets)} features to {args.output}\n")
    return 0


def _executor(args: argparse.Namespace) -> Any:
    import torch

    from geo_hires.pipeline import LocalExecutor

    device = None if args.device == "auto" else torch.device(args.device)
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda asked for, but no CUDA device is available; use --device cpu"
        )
    if args.executor == "local":
        return LocalExecutor(device=device)
    try:
        from geo_hires.runtime.ray_executor import RayConfig, RayExecutor
    except ImportError as exc:
        raise ConfigError(
            f"--executor ray needs Ray installed (pip install 'ray[default]'): {exc}"
        ) from exc
    gpus = args.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if device is not None and device.type == "cuda" else 0.0
    return RayExecutor(
        config=RayConfig(
            address=args.address,
            actors=args.actors,
            num_cpus=args.cpus_per_actor,
            num_gpus=gpus,
            placement_timeout_s=args.placement_timeout,
        )
    )


@contextlib.contextmanager
def _running_executor(args: argparse.Namespace) -> Iterator[Any]:
    """The executor the flags ask for, with its workers (Ray actors) stopped afterwards."""
    executor = _executor(args)
    try:
        yield executor
    finally:
        stop = getattr(executor, "shutdown", None)
        if stop is not None:
            stop()


def _detect_config(args: argparse.Namespace) -> Any:
    from geo_hires.pipeline import DetectConfig

    levels = tuple(n.strip() for n in args.levels.split(",") if n.strip()) if args.levels else None
    from geo_hires.zoom import ZoomConfig

    return DetectConfig(
        core=args.block,
        batch_size=args.batch,
        threads=args.threads,
        score_threshold=args.score_threshold,
        levels=levels,
        zoom=ZoomConfig(mode=args.zoom, budget=args.budget),
    )


def _model(args: argparse.Namespace) -> Any:
    """A shipped name or bundle folder as given, or a bare ultralytics ``.pt`` loaded."""
    if str(args.model).lower().endswith(".pt"):
        from geo_hires.models.bundle import load_pt

        if args.model_gsd is None:
            raise ConfigError(
                f"--model {args.model}: a bare .pt needs --model-gsd (metres per pixel of its "
                "training data); or give a bundle folder with a card.json"
            )
        return load_pt(args.model, gsd_m=args.model_gsd, window=args.window)
    return args.model


def _cmd_detect(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.pipeline import run_detect

    with _running_executor(args) as executor:
        result = run_detect(
            args.scene,
            args.output,
            model=_model(args),
            gpkg=args.gpkg,
            quicklook=args.quicklook,
            config=_detect_config(args),
            read_config=_read_config(args),
            executor=executor,
            resume=args.resume,
            progress=sys.stderr.isatty(),
            aoi=args.aoi,
            coverage=args.coverage,
        )
    per_level = ", ".join(
        f"{lv.name}: {len(lv.cores)} of {lv.windows} windows zoomed (x{lv.downsample})"
        if lv.windows is not None
        else f"{lv.name}: {lv.blocks} blocks (x{lv.downsample})"
        for lv in result.levels
    )
    resumed = f", {result.resumed_units} units resumed" if result.resumed_units else ""
    if args.zoom != "all" or args.budget is not None:
        z = result.zoom(_detect_config(args).zoom)
        resumed += (
            f", zoom {z['mode']}: {z['fine_windows']} fine windows "
            f"({100 * z['fine_windows_fraction']:.0f} %, "
            f"{100 * z['fine_pixels_fraction']:.0f} % of fine pixels)"
        )
    if args.aoi:
        planned, scanned = result.pixels_planned / 1e6, result.pixels_scanned / 1e6
        resumed += (
            f", AOI: {scanned:.1f} of {planned:.1f} MP scanned "
            f"({100 * (1 - scanned / max(planned, 1e-9)):.0f} % saved)"
        )
    out.write(
        f"{Path(args.scene).name}: {result.blocks} windows [{per_level}], "
        f"{len(result.detections)} detections, {result.seconds:.1f} s, "
        f"{result.megapixels / max(result.seconds, 1e-9):.1f} MP/s{resumed} -> "
        f"{', '.join(args.output + ([args.gpkg] if args.gpkg else []))}\n"
    )
    return 0


def _log_line(text: str) -> None:
    sys.stderr.write(f"geo-hires: {text}\n")


def _cmd_batch(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.runtime.batch import run_batch

    with _running_executor(args) as executor:
        report = run_batch(
            args.list,
            args.out_dir,
            model=_model(args),
            config=_detect_config(args),
            read_config=_read_config(args),
            executor=executor,
            resume=args.resume,
            progress=sys.stderr.isatty(),
            log=_log_line,
            aoi=args.aoi,
        )
    out.write(
        f"batch: {report.done} done, {report.failed} failed, {report.skipped} skipped "
        f"(already done) -> {args.out_dir}\n"
    )
    return 0 if report.failed == 0 else 3


def _fmt_row(name: str, s: Any) -> str:
    return (
        f"{name:<20} {s.ap50:>6.3f} {s.ap50_95:>8.3f} {s.precision:>9.3f} {s.recall:>7.3f} "
        f"{s.n_truth:>7} {s.n_pred:>7}\n"
    )


def _cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.evaluate import common_frame, evaluate
    from geo_hires.labels import read_labels
    from geo_hires.scene import open_scene

    scene = open_scene(args.scene, config=_read_config(args)) if args.scene else None
    image = Path(scene.path).name if scene else None
    pred, truth = common_frame(
        read_labels(args.pred, image=image), read_labels(args.truth, image=image), scene
    )
    result = evaluate(pred, truth, iou=args.iou)
    if args.json:
        out.write(json.dumps(result.as_json(), sort_keys=True) + "\n")
        return 0
    out.write(
        f"{'class':<20} {'AP50':>6} {'AP50:95':>8} {'P@bestF1':>9} {'R@bestF1':>7} "
        f"{'truth':>7} {'pred':>7}\n"
    )
    for name, s in result.per_class.items():
        out.write(_fmt_row(name, s))
    out.write(_fmt_row("all", result.overall))
    return 0


def _add_scene_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, default=0, help="declared-size budget (pixels)")
    p.add_argument(
        "--bands",
        default=None,
        metavar="R,G,B",
        help="scene bands used as red, green, blue: 1-based indexes (3,2,1) or names "
        "(colour interpretation or band description); default: by colour interpretation",
    )
    p.add_argument(
        "--rpc-height",
        type=float,
        default=0.0,
        metavar="M",
        help="height above the ellipsoid (m) for scenes placed by RPCs (default 0)",
    )
    p.add_argument(
        "--asset",
        metavar="KEY",
        help="for a STAC item: the asset to scan (default: the visual/RGB one)",
    )


def _add_detect_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="aircraft_lsn",
        help="shipped model name, bundle folder, or an ultralytics .pt (with --model-gsd)",
    )
    p.add_argument(
        "--model-gsd",
        type=float,
        default=None,
        help="for a bare .pt: metres per pixel of the imagery it was trained on",
    )
    p.add_argument(
        "--window",
        type=int,
        default=640,
        help="for a bare .pt: window side in pixels (its imgsz); windows overlap by 96 px",
    )
    p.add_argument(
        "--score-threshold", type=float, default=None, help="minimum score (default: the card's)"
    )
    p.add_argument(
        "--levels", default=None, help="comma-separated level names of the model (default: all)"
    )
    p.add_argument(
        "--zoom",
        choices=["all", "gate", "rl", "random", "none"],
        default="all",
        help="which fine windows get the full-resolution pass: all, gate (coarse evidence), "
        "rl (the model's learned policy), random, none (coarse detections only)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="at most this share of fine windows, in (0, 1] (the highest-ranked)",
    )
    p.add_argument("--block", type=int, default=1024, help="block core size (level px)")
    p.add_argument("--batch", type=int, default=2, help="blocks per forward pass")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads per forward pass (part of the config: equal threads, equal bytes)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the network runs (auto: CUDA when present)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="run work units in this process, or on Ray scanner actors",
    )
    p.add_argument("--address", default=None, help="Ray cluster to join (auto or HOST:PORT)")
    p.add_argument("--actors", type=int, default=2, help="Ray scanner actors")
    p.add_argument("--gpus-per-actor", type=float, default=None, help="GPUs per Ray actor")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs Ray reserves per actor")
    p.add_argument(
        "--placement-timeout",
        type=float,
        default=600.0,
        help="seconds work may wait with no Ray actor placed before the scene fails",
    )
    p.add_argument(
        "--aoi",
        metavar="FILE",
        help="area of interest (any vector format and CRS): scan only there, keep detections "
        "centred in it",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    _add_scene_opts(p)


def _add_scene_commands(sub: Any) -> None:
    """Commands on scenes and labels: info, plan, synth, convert."""
    p = sub.add_parser("info", help="describe a scene (size, CRS, GSD, bands)")
    p.add_argument("scene", help="raster file (GeoTIFF/COG, anything GDAL reads) or STAC item")
    _add_scene_opts(p)
    p = sub.add_parser("plan", help="print the multi-scale window plan of a scene")
    p.add_argument("scene", help="raster file (GeoTIFF/COG, anything GDAL reads) or STAC item")
    p.add_argument(
        "--levels",
        default="full:512:0.25,coarse:512:0.25:4",
        help="NAME:WINDOW[:OVERLAP[:FACTOR|GSDm]],... (default: %(default)s)",
    )
    p.add_argument(
        "--small-scene",
        choices=[m.value for m in SmallScenePolicy],
        default="pad",
        help="a window larger than the scene: pad it, skip the level, or fail",
    )
    _add_scene_opts(p)
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
    p = sub.add_parser("convert", help="labels (any format) → GeoJSON / GeoPackage / quicklook")
    p.add_argument("labels", help="label file (GeoJSON, CSV, Airbus CSV, VOC XML, DOTA txt)")
    p.add_argument("--scene", required=True, help="the scene the labels belong to")
    p.add_argument("-o", "--output", required=True, help="GeoJSON to write (WGS84)")
    p.add_argument("--gpkg", help="also write a GeoPackage (scene CRS)")
    p.add_argument("--quicklook", help="PNG of the scene with the labels drawn")
    p.add_argument("--model-name", default="labels", help="value of the 'model' property")
    _add_scene_opts(p)


def _add_model_commands(sub: Any) -> None:
    """Commands that run or train models, or score them: detect, batch, train, eval (the
    training ones live in :mod:`geo_hires.train.commands`)."""
    from geo_hires.train.commands import add_train_commands

    p = sub.add_parser("detect", help="detect objects in a scene → GeoJSON (+ GPKG, quicklook)")
    p.add_argument("scene", help="raster file (GeoTIFF/COG, anything GDAL reads) or STAC item")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        action="append",
        help="file to write, format by extension: .geojson (WGS84), .gpkg, .parquet "
        "(GeoParquet), .fgb (FlatGeobuf) (scene CRS); repeat for several",
    )
    p.add_argument("--gpkg", help="also write a GeoPackage (same as another -o FILE.gpkg)")
    p.add_argument("--quicklook", help="PNG of the scene with the detections drawn")
    p.add_argument(
        "--coverage",
        metavar="FILE",
        help="also write the area each level scanned (valid data, AOI), format by extension",
    )
    _add_detect_opts(p)
    p = sub.add_parser("batch", help="detect in every scene of a list (one path per line)")
    p.add_argument("list", help="text file, one scene (or STAC item) path per line")
    p.add_argument("--out-dir", required=True, help="folder for <name>.geojson and .status.json")
    _add_detect_opts(p)
    add_train_commands(sub)
    p = sub.add_parser("eval", help="score predictions against ground truth (COCO AP)")
    p.add_argument("pred", help="predictions (any supported label format)")
    p.add_argument("truth", help="ground truth (any supported label format)")
    p.add_argument("--scene", help="places pixel-space labels on the map")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for precision/recall")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_scene_opts(p)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="geo-hires",
        description="Find objects in huge georeferenced rasters; GeoJSON and GeoPackage out.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    _add_scene_commands(sub)
    _add_model_commands(sub)
    _add_plugin_commands(sub)
    return ap


def _add_plugin_commands(sub: Any) -> None:
    """Commands of installed packages, from entry points ``geo_hires.commands``.

    Why entry points (as ``rio`` takes its plugins): the HTTP service adds ``serve`` and
    ``submit`` to this command line without the library importing the service. Each entry point
    is a function that adds sub-parsers and sets their ``_handler`` default.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="geo_hires.commands"):
        ep.load()(sub)


_COMMANDS = {
    "info": _cmd_info,
    "plan": _cmd_plan,
    "synth": _cmd_synth,
    "convert": _cmd_convert,
    "eval": _cmd_eval,
    "detect": _cmd_detect,
    "batch": _cmd_batch,
}


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    sys.stderr.write(f"geo-hires: warning: {message}\n")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 error, 130 interrupted)."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            handler = getattr(args, "_handler", None) or _COMMANDS[args.command]
            return int(handler(args, out or sys.stdout))
        except GeoHiresError as exc:
            if os.environ.get("GEO_HIRES_DEBUG"):
                raise
            sys.stderr.write(f"geo-hires: error: {exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write("geo-hires: interrupted\n")
            return 130


if __name__ == "__main__":
    sys.exit(main())
