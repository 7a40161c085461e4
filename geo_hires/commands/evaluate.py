"""``geo-hires eval`` (score predictions against ground truth, COCO AP) and ``geo-hires diff``
(change between two results: persisted, appeared, disappeared)."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from geo_hires.commands.args import SCENE_FLAGS, add_scene_args, given_flags, read_config, renaming
from geo_hires.errors import ClassMismatchWarning, NoTruthWarning

__all__ = ["add_commands"]


def _fmt_row(name: str, s: Any) -> str:
    return (
        f"{name:<20} {s.ap50:>6.3f} {s.ap50_95:>8.3f} {s.precision:>9.3f} {s.recall:>7.3f} "
        f"{s.n_truth:>7} {s.n_pred:>7}\n"
    )


def _check_classes(pred: Sequence[str], truth: Sequence[str]) -> None:
    """Warn when no class is on both sides: every score would be 0 for a naming reason."""
    if pred and truth and not set(pred) & set(truth):
        warnings.warn(
            f"the predictions' classes {sorted(set(pred))} and the truth's {sorted(set(truth))} "
            "share none, so every score is 0; rename the truth's with --class-map OLD=NEW",
            ClassMismatchWarning,
            stacklevel=2,
        )


def _check_truth(n_pred: int, n_read: int, n_truth: int, image: str | None) -> None:
    """Warn when there is nothing to find: the scores would be 0 for a reading reason."""
    if n_truth or not n_pred:
        return
    why = (
        f"its {n_read} objects lie off the scene"
        if n_read
        else f"it names no object of {image}"
        if image
        else "it holds no object"
    )
    warnings.warn(
        f"the truth has nothing to find ({why}), so every prediction is a false alarm; check "
        "that it is the truth of this scene",
        NoTruthWarning,
        stacklevel=2,
    )


def _check_scene_args(args: argparse.Namespace) -> None:
    """Reading options act on ``--scene``: without one they would be dropped unsaid."""
    from geo_hires.errors import ConfigError

    orphans = given_flags(args, SCENE_FLAGS)
    if orphans and not args.scene:
        raise ConfigError(f"{', '.join(orphans)} read(s) the scene: give it with --scene")


def _cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.evaluate import common_frame, evaluate
    from geo_hires.labels import read_labels
    from geo_hires.scene.stac import open_input

    _check_scene_args(args)
    scene = open_input(args.scene, read_config(args))[0] if args.scene else None  # or an item
    image = Path(scene.path).name if scene else None
    truth_labels = read_labels(args.truth, image=image).renamed(dict(args.class_map))
    pred_labels = read_labels(args.pred, image=image)
    _check_classes(pred_labels.names, truth_labels.names)
    pred, truth = common_frame(pred_labels, truth_labels, scene)
    _check_truth(len(pred), len(truth_labels.rings), len(truth), image)
    result = evaluate(pred, truth, iou=args.iou, threshold=args.threshold)
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
    if result.operating is not None:
        op = result.operating
        out.write(
            f"at score >= {op.threshold:g}: precision {op.precision:.3f}, recall {op.recall:.3f} "
            f"(IoU {args.iou:g})\n"
        )
    return 0


def _read_layer(path: str) -> Any:
    from geo_hires.export.geojson import in_pixel_space
    from geo_hires.vectorfile import read_vector

    frame = read_vector(path, "the detection layer")
    if in_pixel_space(path):  # GDAL calls every GeoJSON WGS84, ours in pixels too
        frame = frame.set_crs(None, allow_override=True)
    return frame


def _cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.errors import ConfigError
    from geo_hires.evaluate.diff import CHANGES, DiffConfig, change_collection, diff_layers
    from geo_hires.export.geojson import write_text_atomic
    from geo_hires.export.remote import check_destination, staged
    from geo_hires.export.vector import check_kind

    check_kind("-o", args.output, (".geojson", ".json"))
    if os.path.abspath(args.output) in (os.path.abspath(args.old), os.path.abspath(args.new)):
        raise ConfigError(f"-o {args.output!r} is an input; write the changes to a new file")
    check_destination([args.output])
    cfg = DiffConfig(iou=args.iou, small_m=args.small, max_shift_m=args.max_shift)
    changes = diff_layers(_read_layer(args.old), _read_layer(args.new), cfg)
    meta = {"old": Path(args.old).name, "new": Path(args.new).name,
            "iou": cfg.iou, "small_m": cfg.small_m, "max_shift_m": cfg.max_shift_m}  # fmt: skip
    fc = change_collection(changes, meta)
    with staged([args.output]) as (output,):
        assert output is not None
        write_text_atomic(output, json.dumps(fc, separators=(",", ":")) + "\n")
    out.write(f"{'class':<20} " + " ".join(f"{c:>11}" for c in CHANGES) + "\n")
    for cls, counts in fc["geo_hires"]["summary"].items():
        out.write(f"{cls:<20} " + " ".join(f"{counts[c]:>11}" for c in CHANGES) + "\n")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``eval`` and ``diff`` to the ``geo-hires`` sub-parsers."""
    p = sub.add_parser("eval", help="score predictions against ground truth (COCO AP)")
    p.add_argument("pred", help="predictions (any supported label format)")
    p.add_argument("truth", help="ground truth (any supported label format)")
    p.add_argument("--scene", help="places pixel-space labels on the map")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for precision/recall")
    p.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="also give precision and recall of the predictions scoring T or more",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--class-map", action="append", default=[], type=renaming, metavar="OLD=NEW",
        help="rename a class of the truth (repeatable), as the model's training did",
    )  # fmt: skip
    add_scene_args(p)
    p.set_defaults(_handler=_cmd_eval)
    p = sub.add_parser("diff", help="change between two results: persisted, appeared, disappeared")
    p.add_argument("old", help="the earlier result (any vector format and CRS)")
    p.add_argument("new", help="the later result (any vector format and CRS)")
    p.add_argument("-o", "--output", required=True, help="GeoJSON of every object and its change")
    p.add_argument("--iou", type=float, default=0.3, help="IoU that matches objects (default 0.3)")
    p.add_argument(
        "--small", type=float, default=12.0, metavar="M",
        help="objects smaller than this (square root of area, metres) match by centre distance",
    )  # fmt: skip
    p.add_argument(
        "--max-shift", type=float, default=4.0, metavar="M",
        help="largest centre shift (metres) for small objects to match (default 4)",
    )  # fmt: skip
    p.set_defaults(_handler=_cmd_diff)
