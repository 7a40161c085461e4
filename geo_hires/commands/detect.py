"""Commands that detect: ``detect`` (one scene) and ``batch`` (a list of scenes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from geo_hires.commands.args import (
    SCENE_HELP,
    add_detect_args,
    detect_options,
    run_bundle,
    running_executor,
)

__all__ = ["add_commands"]


def _base_read(args: argparse.Namespace) -> Any:
    """The read budget of ``--max-pixels``; the options add bands, asset, RPC height."""
    from geo_hires.config import ReadConfig

    return ReadConfig(max_scene_pixels=args.max_pixels) if args.max_pixels else ReadConfig()


def _cmd_detect(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.export.vector import check_kind
    from geo_hires.pipeline import Outputs, run_detect
    from geo_hires.scene.remote import public

    check_kind("--gpkg", args.gpkg, (".gpkg",))
    files = [*args.output, *([args.gpkg] if args.gpkg else [])]
    outputs = Outputs(files=tuple(files), quicklook=args.quicklook, coverage=args.coverage,
                      timing=args.timing)  # fmt: skip
    with running_executor(args) as executor:
        result = run_detect(
            args.scene, outputs, detect_options(args), bundle=run_bundle(args),
            read_config=_base_read(args), executor=executor, resume=args.resume,
            progress=sys.stderr.isatty(),
        )  # fmt: skip
    out.write(result.summary(public(args.scene), files) + "\n")
    return 0


def _log_line(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"geo-hires: {text}", file=sys.stderr)  # above a progress bar, not through it


def _cmd_batch(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.pipeline import run_batch

    with running_executor(args) as executor:
        report = run_batch(
            args.list, args.out_dir, detect_options(args), bundle=run_bundle(args),
            read_config=_base_read(args), executor=executor, resume=args.resume,
            progress=sys.stderr.isatty(), log=_log_line,
        )  # fmt: skip
    out.write(
        f"batch: {report.done} done, {report.failed} failed, {report.skipped} skipped "
        f"(already done) -> {args.out_dir}\n"
    )
    return 0 if report.failed == 0 else 3


def add_commands(sub: Any) -> None:
    """Add ``detect`` and ``batch`` to the ``geo-hires`` sub-parsers."""
    p = sub.add_parser("detect", help="detect objects in a scene → GeoJSON (+ GPKG, quicklook)")
    p.add_argument("scene", help=SCENE_HELP)
    p.add_argument(
        "-o", "--output", required=True, action="append",
        help="file to write, format by extension: .geojson (WGS84), .gpkg, .parquet "
        "(GeoParquet), .fgb (FlatGeobuf) (scene CRS), .stac.json (a STAC item describing the "
        "other outputs); a path or s3://BUCKET/KEY; repeat for several",
    )  # fmt: skip
    p.add_argument("--gpkg", help="also write a GeoPackage (same as another -o FILE.gpkg)")
    p.add_argument("--quicklook", help="PNG of the scene with the detections drawn")
    p.add_argument(
        "--coverage", metavar="FILE",
        help="also write the area each level scanned (valid data, AOI), format by extension",
    )  # fmt: skip
    p.add_argument(
        "--timing", action="store_true",
        help="record where the time went (geo_hires.timing) in the outputs; off by default, "
        "so that equal runs write equal bytes",
    )  # fmt: skip
    add_detect_args(p)
    p.set_defaults(_handler=_cmd_detect)
    p = sub.add_parser("batch", help="detect in every scene of a list (one path per line)")
    p.add_argument(
        "list", help="text file (or s3:// object), one scene or STAC item per line: a path, "
        "relative to the list, or an s3:// / https:// URL",
    )  # fmt: skip
    p.add_argument(
        "--out-dir", required=True,
        help="folder or s3://BUCKET/PREFIX for <name>.geojson, .status.json and the journals",
    )  # fmt: skip
    add_detect_args(p)
    p.set_defaults(_handler=_cmd_batch)
