"""``geo-hires cascade``: a scanner bundle and a YOLO bundle → one cascade bundle.

Nothing is trained: the scanner's network, level plan and zoom policy (which reads the same
network's evidence) are copied with the refiner's weights, and the card records both sides'
training so the cascade's provenance reads without its parts at hand. Of the scanner's card
entries only those that describe the copied files travel (:data:`CARRIED`). Its measurements
and the decisions made on them (``metrics``, ``precision``, ``zoom_default``, ``default``...)
are about another model: carried over, ``--precision auto`` and ``--zoom auto`` would act on
the scanner's evidence. The cascade starts unmeasured (fp32, ``--zoom all``), and whoever
measures it records the results (:func:`geo_hires.models.card.update_card`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path

from geo_hires.errors import ConfigError, WeakPartWarning, warn
from geo_hires.models.card import CascadeRule, ModelCard, bundle_dir, load_card, save_card
from geo_hires.train.yolo_run import WEIGHTS
from geo_hires.train.yolo_sources import yolo_source

__all__ = ["CARRIED", "make_cascade_bundle"]

CARRIED = ("licence", "zoom_policy", "zoom_training")
"""The scanner's card entries a cascade keeps: its licence, and its zoom policy's file and
training record (the policy reads the scanner's evidence, which the cascade computes alike)."""
_POLICY_FILES = ("zoom.pt", "zoom.pt.json")


def make_cascade_bundle(
    scanner: str | os.PathLike[str],
    refiner: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str,
    rule: CascadeRule | None = None,
) -> ModelCard:
    """A cascade bundle: ``scanner``'s levels and weights, ``refiner``'s YOLO as the refiner.

    ``refiner`` is an ultralytics bundle (its first YOLO file is taken) or a ``.pt`` file.
    """
    scan_dir = bundle_dir(scanner)
    scan_card = load_card(scan_dir)
    ref, ref_card = yolo_source(refiner, flag="--refiner")
    _check_parts(scan_card, ref_card, ref)
    _warn_weak(ref_card)
    target = Path(out)
    for flag, folder in (("--scanner", scan_dir), ("--refiner", ref.parent)):
        if target.resolve() == Path(folder).resolve():  # its files would be copied onto themselves
            raise ConfigError(
                f"--out {out}: that is the {flag[2:]}'s bundle; write to a new folder"
            )
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scan_dir / "weights.pt", target / "weights.pt")
    for policy_file in _POLICY_FILES:
        if (scan_dir / policy_file).is_file():
            shutil.copyfile(scan_dir / policy_file, target / policy_file)
    shutil.copyfile(ref, target / WEIGHTS)
    scan_training = scan_card.extra.get("training", {})
    extra = {k: scan_card.extra[k] for k in CARRIED if k in scan_card.extra}
    extra["training"] = {
        "scanner": {"bundle": scan_card.name, **scan_training},
        "refiner": {"file": ref.name, **(ref_card.extra.get("training", {}) if ref_card else {})},
        "class_map": scan_training.get("class_map", {}),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }
    rule = dataclasses.replace(rule or CascadeRule(detector=WEIGHTS), detector=WEIGHTS)
    card = dataclasses.replace(scan_card, name=name, cascade=rule, extra=extra)
    save_card(target, card)
    return card


def _warn_weak(ref_card: ModelCard | None) -> None:
    """Say so when the refiner's own card measured it to find (almost) nothing (a YOLO of one
    epoch): every candidate would go unconfirmed, kept at half its score, without a word."""
    if ref_card is None:  # a bare .pt: nothing measured
        return
    metrics = ref_card.extra.get("metrics") or {}
    ap50 = metrics.get("ap50")
    if isinstance(ap50, (int, float)) and ap50 < 0.05:
        warn(
            f"--refiner {ref_card.name}: its card measured AP50 {ap50:.3f} "
            f"({metrics.get('n_pred', '?')} detections on its validation images): it would "
            "confirm no candidate; train it longer",
            WeakPartWarning,
        )


def _check_parts(scan: ModelCard, ref_card: ModelCard | None, ref: Path) -> None:
    """Refuse parts that cannot make a cascade, before any file is written: a scanner that is
    not one (a YOLO bundle, a cascade: its refiner would be dropped), and a refiner of other
    classes or another GSD than the scanner's (``detect`` refused the first only at load; the
    second ran the refiner at the scanner's GSD)."""
    if scan.arch is None or scan.cascade is not None:
        kind = "a cascade" if scan.cascade is not None else "not a scanning network"
        raise ConfigError(f"--scanner {scan.name}: {kind}; give an LSN bundle (geo-hires train)")
    from geo_hires.models.yolo import load_yolo

    names = list(load_yolo(ref).class_names)
    if names != list(scan.classes):
        raise ConfigError(
            f"--refiner {ref}: predicts classes {names}, the scanner {list(scan.classes)}; train "
            "both with the same classes (--class-map)"
        )
    if ref_card is not None and abs(ref_card.gsd_m / scan.gsd_m - 1) > 0.05:
        raise ConfigError(
            f"--refiner: trained at {ref_card.gsd_m:g} m, the scanner at {scan.gsd_m:g} m; the "
            "cascade runs its refiner at the scanner's GSD: train both at one GSD"
        )
