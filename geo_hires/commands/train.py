"""The training commands: ``train``, ``cascade``, ``train-zoom``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from geo_hires.commands.args import given_flags, renaming
from geo_hires.detect.options import DEFAULT_MODEL
from geo_hires.errors import ConfigError

__all__ = ["add_commands"]


STEPS = 3600
"""The LSN's default step budget."""


def _log_line(text: str) -> None:
    sys.stderr.write(f"geo-hires: {text}\n")


def _training_scenes(given: list[str]) -> list[str]:
    """The image files named, or in the folders named; one each (a folder and a file of it
    name one scene twice)."""
    missing = [s for s in given if not Path(s).exists()]
    if missing:
        raise ConfigError(f"scene {missing[0]} not found; check the path")
    scenes = sorted(
        {
            str(p.resolve()): str(p)
            for s in given
            for p in (sorted(Path(s).glob("*")) if Path(s).is_dir() else [Path(s)])
        }.values()
    )
    images = {".tif", ".tiff", ".jpg", ".jpeg", ".png"}
    scenes = [s for s in scenes if Path(s).suffix.lower() in images]
    if not scenes:
        raise ConfigError("no scenes to train on; pass image files or folders of .tif/.jpg/.png")
    return scenes


def _cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.train.fit import FitConfig
    from geo_hires.train.run import TrainJob, train_bundle
    from geo_hires.train.yolo_data import YoloDataConfig
    from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle
    from geo_hires.train.yolo_sources import YOLO_ARCHS

    scenes = _training_scenes(args.scenes)
    job = TrainJob(
        scenes=tuple(scenes),
        labels=args.labels,
        out=args.out,
        name=args.name,
        arch=args.arch,
        gsd_m=args.gsd,
        class_map=dict(args.class_map),
        val_fraction=args.val_fraction,
        val_scenes=tuple(args.val_scenes),
        licence=args.licence,
        fit=FitConfig(
            steps=STEPS if args.steps is None else args.steps,
            minutes=args.minutes,
            batch_size=args.batch,
            seed=args.seed,
        ),
    )
    if args.arch in YOLO_ARCHS:
        if args.steps is not None:
            raise ConfigError("--steps is for the LSN; a YOLO trains for --minutes")
        _check_obb_data(args)
        data = YoloDataConfig(
            chips_per_image=args.chips_per_image,
            gsd_range=None
            if args.gsd_range == [0.0, 0.0]
            else (args.gsd_range[0], args.gsd_range[1]),
            seed=args.seed,
        )
        cfg = YoloTrainConfig(
            arch=args.arch, minutes=args.minutes, batch=args.batch, device=args.train_device,
            data=data, select_fraction=args.select_fraction, init=args.init,
        )  # fmt: skip
        card = train_yolo_bundle(job, cfg, evaluate=_validation_metrics, work=args.work)
    else:
        _check_lsn_flags(args)
        card = train_bundle(job, evaluate=_validation_metrics)
    out.write(f"wrote {args.out} ({card.extra['training']['report']})\n")
    if "metrics" in card.extra:  # as cascade says it; the card holds the rest
        out.write(_validation_line(card.extra["metrics"]))
    return 0


def _validation_line(metrics: dict[str, Any]) -> str:
    return (
        f"validation: AP50 {metrics['ap50']:.3f}, AP50:95 {metrics['ap50_95']:.3f} "
        f"({metrics['images']} images)\n"
    )


YOLO_ONLY = {
    "train_device": "cpu", "val_scenes": [], "select_fraction": 0.15, "chips_per_image": 40,
    "gsd_range": [0.3, 1.2], "init": None, "work": None,
}  # fmt: skip
"""The flags only YOLO training reads, at their defaults: given to the LSN's, they would be
dropped without a word (a GPU asked for and the CPU used, chosen validation scenes ignored)."""


def _check_lsn_flags(args: argparse.Namespace) -> None:
    given = given_flags(args, YOLO_ONLY)
    if given:
        raise ConfigError(
            f"{', '.join(given)}: for YOLO training (--arch yolov8n…); the LSN trains on the CPU "
            "with --val-fraction, --steps and --minutes"
        )


def _check_obb_data(args: argparse.Namespace) -> None:
    """An OBB dataset is a grid of chips at the data's GSD: refuse settings it would ignore."""
    ignored = given_flags(args, {k: YOLO_ONLY[k] for k in ("chips_per_image", "gsd_range")})
    if args.arch.endswith("-obb") and ignored:
        raise ConfigError(
            f"{', '.join(ignored)}: an -obb model trains on a grid of chips at the data's own "
            "GSD; drop the option(s), or train a box model (--arch yolov8n)"
        )


def _cmd_cascade(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.models.card import CascadeRule, update_card
    from geo_hires.train.cascade import make_cascade_bundle

    if bool(args.images) != bool(args.labels):
        raise ConfigError("cascade: give --images and --labels together to score, or neither")
    if args.images:
        _check_unseen(args.scanner, args.refiner)
    rule = CascadeRule(
        detector="yolo.pt",
        window=args.window,
        gate_threshold=args.gate_threshold,
        unmatched_scale=args.unmatched_scale,
    )
    card = make_cascade_bundle(args.scanner, args.refiner, args.out, name=args.name, rule=rule)
    if args.images and args.labels:
        scenes = [str(Path(args.images) / n) for n in card.val_images]
        if not scenes:
            raise ConfigError(f"{args.scanner}: its card names no validation images to score on")
        metrics = _validation_metrics(args.out, scenes, args.labels)
        update_card(args.out, {"metrics": metrics})
        out.write(_validation_line(metrics))
    out.write(f"wrote {args.out}\n")
    return 0


def _check_unseen(scanner: str, refiner: str) -> None:
    """The cascade is scored on its scanner's validation images: refuse, before writing, a
    refiner that trained on some of them (its score there would flatter the cascade)."""
    from geo_hires.models.card import bundle_dir, load_card
    from geo_hires.train.yolo_sources import yolo_source

    ref_card = yolo_source(refiner, flag="--refiner")[1]
    seen = set(ref_card.train_images) if ref_card is not None else set()
    leaked = sorted(seen & set(load_card(bundle_dir(scanner)).val_images))
    if leaked:
        raise ConfigError(
            f"--images: the refiner trained on {len(leaked)} of the scanner's validation images "
            f"({', '.join(leaked[:3])}{'…' if len(leaked) > 3 else ''}), which would flatter "
            "the score; train it with --val-scenes those images, or leave --images out"
        )


def _cmd_train_zoom(args: argparse.Namespace, out: TextIO) -> int:
    from geo_hires.detect.options import ZoomConfig
    from geo_hires.train.zoom import ZoomTrainConfig, train_zoom_policy

    if args.window != ZoomConfig().window:
        raise ConfigError(
            f"--window {args.window}: detect zooms {ZoomConfig().window}-px windows, so a policy "
            "deciding on others could never run there"
        )
    cfg = ZoomTrainConfig(
        window=args.window, cost=args.cost, epochs=args.epochs, seed=args.seed,
        gsds=tuple(args.gsds), safety_recall=args.safety_recall or None,
    )  # fmt: skip
    record = train_zoom_policy(args.model, args.images, args.labels, args.out, cfg, log=_log_line)
    val = record["validation"]
    if isinstance(val, dict):
        for mode, row in sorted(val.items()):
            out.write(
                f"{mode:<26} AP50 {row['ap50']:.3f}  AP50:95 {row['ap50_95']:.3f}  "
                f"fine pixels {100 * row['fine_pixels_fraction']:.0f} %\n"
            )
    out.write(f"wrote {args.out}/zoom.pt\n")
    return 0


def _validation_metrics(bundle: str, scenes: Sequence[str], labels: str) -> dict[str, Any]:
    """Detect on each validation scene with the bundle and score all of them together."""
    from geo_hires.evaluate import evaluate_scenes

    return evaluate_scenes(bundle, scenes, labels)


def add_commands(sub: Any) -> None:
    """Add ``train``, ``cascade`` and ``train-zoom`` to the ``geo-hires`` sub-parsers."""
    _add_train(sub)
    _add_cascade(sub)
    _add_train_zoom(sub)


def _add_train(sub: Any) -> None:
    """``train``: a scanning detector or an ultralytics YOLO from labelled scenes."""
    p = sub.add_parser(
        "train", help="train a scanning detector or an ultralytics YOLO on labelled scenes"
    )
    p.add_argument("scenes", nargs="+", help="scene files or folders")
    p.add_argument("--labels", required=True, help="one label file for all, or a folder")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", default="model", help="model name (in its card and outputs)")
    p.add_argument(
        "--arch",
        choices=["lsn", "wide", "yolov8n", "yolo11n", "yolov8n-obb", "yolo11n-obb"],
        default="lsn",
        help="network: light LSN, wide, or an ultralytics YOLO (built from its yaml)",
    )
    p.add_argument(
        "--train-device",
        default=YOLO_ONLY["train_device"],
        help="YOLO training device (cpu, 0 for the first GPU)",
    )
    p.add_argument("--gsd", type=float, default=0.5, help="metres per pixel of the training data")
    p.add_argument(
        "--class-map",
        action="append",
        default=[],
        type=renaming,
        metavar="OLD=NEW",
        help="rename a label class (repeatable)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.15, help="share of images held out (by image)"
    )
    p.add_argument(
        "--val-scenes",
        nargs="+",
        default=YOLO_ONLY["val_scenes"],
        metavar="SCENE",
        help="YOLO: validation scene files (the scenes above are then all training scenes)",
    )
    p.add_argument(
        "--select-fraction",
        type=float,
        default=YOLO_ONLY["select_fraction"],
        help="YOLO: share of the training images (by image) that picks the best epoch",
    )
    p.add_argument(
        "--chips-per-image",
        type=int,
        default=YOLO_ONLY["chips_per_image"],
        help="YOLO: chips drawn per training image",
    )
    p.add_argument(
        "--gsd-range",
        type=float,
        nargs=2,
        default=YOLO_ONLY["gsd_range"],
        metavar=("LOW", "HIGH"),
        help="YOLO: scene GSDs (m) the chips are drawn as if from (0 0: the data's own only)",
    )
    p.add_argument(
        "--init",
        metavar="BUNDLE",
        help="YOLO: start from this bundle's (or .pt file's) weights instead of from scratch",
    )
    p.add_argument(
        "--work",
        help="YOLO: folder kept for chips and the run; the same command resumes in it after a "
        "kill (default: a temporary folder, removed)",
    )
    p.add_argument(
        "--steps", type=int, default=None,
        help=f"LSN training steps (at most; default {STEPS}); a YOLO trains for --minutes",
    )  # fmt: skip
    p.add_argument(
        "--minutes",
        type=float,
        default=22.0,
        help="time budget of the training loop (at most); a YOLO's chips are written before "
        "it, and the model is scored on the validation images after it",
    )
    p.add_argument("--batch", type=int, default=16, help="chips per step")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--licence", default="see training data", help="licence of the weights (in the card)"
    )
    p.set_defaults(_handler=_cmd_train)


def _add_cascade(sub: Any) -> None:
    """``cascade``: a scanning bundle and a YOLO refiner as one bundle."""
    p = sub.add_parser(
        "cascade", help="assemble a cascade bundle: a scanning bundle plus a YOLO refiner"
    )
    p.add_argument("--scanner", required=True, help="scanning bundle (name or folder)")
    p.add_argument("--refiner", required=True, help="ultralytics bundle folder or .pt")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", default="cascade", help="model name (in its card and outputs)")
    p.add_argument("--window", type=int, default=256, help="refiner window side (pixels)")
    p.add_argument(
        "--gate-threshold", type=float, default=0.1, help="scanner score that earns a look"
    )
    p.add_argument(
        "--unmatched-scale",
        type=float,
        default=0.5,
        help="score factor for candidates the refiner found nothing on (0 drops them)",
    )
    p.add_argument("--images", help="folder of the scanner's validation images (to score)")
    p.add_argument("--labels", help="their labels (to score)")
    p.set_defaults(_handler=_cmd_cascade)


def _add_train_zoom(sub: Any) -> None:
    """``train-zoom``: the learned zoom policy of a scanning bundle."""
    p = sub.add_parser(
        "train-zoom", help="learn which fine windows to zoom (REINFORCE) for a scanning bundle"
    )
    p.add_argument("images", help="folder of the bundle's training and validation images")
    p.add_argument("--labels", required=True, help="their labels")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="bundle with a scanning network (name or folder)"
    )
    p.add_argument("--out", required=True, help="bundle folder to write (may be the bundle)")
    p.add_argument("--window", type=int, default=512, help="fine window side (pixels)")
    p.add_argument(
        "--cost", type=float, default=0.2, help="objects a zoomed window must recover to pay"
    )
    p.add_argument("--epochs", type=int, default=150, help="REINFORCE epochs over all windows")
    p.add_argument(
        "--gsds", type=float, nargs="*", default=[], metavar="M",
        help="also record the images resampled to these ground sample distances (metres)",
    )  # fmt: skip
    p.add_argument(
        "--safety-recall", type=float, default=0.99,
        help="share of the recall gain the safety rule alone covers (0: no safety rule)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(_handler=_cmd_train_zoom)
