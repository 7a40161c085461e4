"""``geo-hires eval``: score predictions against ground truth (COCO AP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from geo_hires.commands.args import add_scene_args, read_config

__all__ = ["add_commands"]


def _fmt_row(name: str, s: Any) -> str:
    return (
        f"{name:<20} {s.ap50:>6.3f} {s.ap50_95:>8.3f} {s.precision:>9.3f} {s.recall:>7.3f} "
        f"{s.n_truth:>7} {s.n_pred:>7}\n"
    )


def _cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.evaluate import common_frame, evaluate
    from geo_hires.labels import read_labels
    from geo_hires.scene import open_scene

    scene = open_scene(args.scene, config=read_config(args)) if args.scene else None
    image = Path(scene.path).name if scene else None
    pred, truth = common_frame(
        read_labels(args.pred, image=image), read_labels(args.truth, image=image), scene
    )
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


def add_commands(sub: Any) -> None:
    """Add ``eval`` to the ``geo-hires`` sub-parsers."""
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
    add_scene_args(p)
    p.set_defaults(_handler=_cmd_eval)
