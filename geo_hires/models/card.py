"""Model cards: what a bundle declares about its models, read and written as ``card.json``.

A bundle is a folder with ``card.json`` — architecture, classes, the GSD the model was trained
for, its YOLT level plan (which objects each level keeps and *which detector* runs it), the
default score threshold, licence, training data and metrics — and the detectors' weights:
``weights.pt`` (a BatchNorm-folded state dict of the scanning network, when a level uses it)
and any ultralytics ``.pt`` files the levels or the cascade name. Shipped bundles live in
``geo_hires/models/weights/NAME``; any other folder can be given by path. This module is card
I/O only (no weights are loaded): a service validates options against cards without loading a
network; :mod:`geo_hires.models.bundle` loads the networks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from pathlib import Path, PurePosixPath
from typing import Any

from geo_hires.errors import ConfigError, option
from geo_hires.models.arch import ArchSpec, LayerSpec

__all__ = [
    "FCN",
    "SHIPPED",
    "TRUNCATED_PX",
    "CascadeRule",
    "Level",
    "ModelCard",
    "bundle_dir",
    "load_card",
    "save_card",
    "shipped_models",
    "update_card",
]

SHIPPED = Path(__file__).parent / "weights"
FCN = "fcn"
"""The detector name of a level run by the bundle's scanning network (``weights.pt``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Level:
    """One level of a model's plan: its ground resolution and the object sizes it keeps.

    Attributes:
        name: Level name (goes into each detection's ``level``).
        target_gsd_m: Ground sample distance the level runs at; the downsample factor is
            ``round(target_gsd_m / scene_gsd_m)``.
        downsample: Factor used when the scene's GSD is unknown (relative to the model's GSD).
        min_size, max_size: Longest box side, in *level* pixels, that this level reports.
        detector: ``"fcn"`` (the bundle's scanning network, run in blocks that share their
            overlap) or the file name of an ultralytics model in the bundle, run on windows.
        window: Window side in level pixels for an ultralytics level (its ``imgsz``).
        halo: Overlap on each side of an ultralytics window, level pixels; a window reports the
            boxes centred in its core (the window less the halo), so objects up to
            ``2 * halo`` pixels are always seen whole by the window that reports them.
    """

    name: str
    target_gsd_m: float
    downsample: int
    min_size: float = 0.0
    max_size: float = 1e9
    detector: str = FCN
    window: int = 0
    halo: int = 0

    def __post_init__(self) -> None:
        where = f"level {self.name!r}"
        _kept(self, where, {"target_gsd_m": {"positive": True},
                            "downsample": {"whole": True, "positive": True},
                            "min_size": {}, "max_size": {}, "window": {"whole": True},
                            "halo": {"whole": True}})  # fmt: skip
        if not 0 <= self.min_size <= self.max_size:
            raise ConfigError(
                f"{where}: 0 <= 'min_size' <= 'max_size' (longest box sides the level keeps, "
                f"level pixels); got {self.min_size}/{self.max_size}"
            )
        if self.detector != FCN:
            _inside_bundle(where, self.detector)
        if self.detector != FCN and (
            self.window < 64
            or self.window % 32
            or self.halo % 16
            or not 0 <= 2 * self.halo < self.window - 32
        ):
            raise ConfigError(
                f"level {self.name!r} runs {self.detector!r}: give 'window' (a multiple of 32, "
                f">= 64) and 'halo' (a multiple of 16, 0 <= 2 * halo < window - 32), got "
                f"{self.window}/{self.halo}"
            )


def _number(where: str, name: str, value: object, *, whole: bool = False,
            positive: bool = False) -> Any:  # fmt: skip
    """``value`` as the card keeps it (an int where ``whole``: ``512.0`` is 512; numpy's
    numbers as Python's), or refused when it is not a finite number (a whole one if
    ``whole``; above 0 if ``positive``): a string or a zero failed later as a TypeError or a
    ZeroDivisionError."""
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    )
    if (
        number is None
        or not math.isfinite(number)
        or (whole and not number.is_integer())
        or (positive and number <= 0)
    ):
        what = ("a whole number" if whole else "a number") + (" > 0" if positive else "")
        raise ConfigError(f"{where}: {name!r} must be {what}, got {value!r}")
    if type(value) is int or (type(value) is float and not whole):
        return value  # as given: a card read back keeps its numbers' types
    return int(number) if whole else number


def _kept(owner: object, where: str, rules: dict[str, dict[str, bool]]) -> None:
    """Check ``owner``'s numeric fields by ``rules`` (name: ``_number``'s keywords) and keep
    each as checked (frozen dataclasses: set in place once, in ``__post_init__``)."""
    for name, rule in rules.items():
        given = getattr(owner, name)
        kept = _number(where, name, given, **rule)
        if kept != given or type(kept) is not type(given):
            object.__setattr__(owner, name, kept)


def _inside_bundle(where: str, detector: object) -> None:
    """Refuse a detector file that is not a relative path inside the bundle folder: the
    bundle travels to Ray actors as its files, rebuilt in a folder of their own, where an
    absolute path or one with ``..`` would be read or written outside it."""
    path = PurePosixPath(str(detector))
    if (
        not isinstance(detector, str)
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in detector
    ):
        raise ConfigError(
            f"{where}: 'detector' {detector!r} must be 'fcn' or an ultralytics .pt's path "
            "inside the bundle folder (relative, without '..')"
        )


TRUNCATED_PX = 2.0
"""A window detector's box within this many pixels of its window's edge (not the scene's) is
dropped as cut by the window: another window holds the whole object."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CascadeRule:
    """The survey's cascade: the scanning levels find candidates, a heavier detector looks
    again only at windows around them, and its boxes replace the candidates'.

    Attributes:
        detector: File name of the ultralytics model in the bundle.
        window: Side of the window around each candidate (full resolution pixels); a larger
            candidate gets a window that holds it with ``margin`` to spare.
        gate_threshold: Candidate score that earns a look (the scanning levels run at this
            threshold: low, so that the refiner, not the scanner, decides).
        margin: Pixels between a candidate's box and its window's edge.
        unmatched_scale: A candidate the refiner found nothing on (IoU < 0.3 with each of its
            boxes) is kept with its score times this (0 drops it): the refiner's misses then
            cost ranking, not recall.
    """

    detector: str
    window: int = 256
    gate_threshold: float = 0.1
    margin: int = 16
    unmatched_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 64 or self.window % 32 or not 0.0 < self.gate_threshold < 1.0:
            raise ConfigError(
                "cascade: 'window' a multiple of 32 (>= 64), 'gate_threshold' in (0, 1); got "
                f"{self.window}/{self.gate_threshold}"
            )
        if not 0.0 <= self.unmatched_scale <= 1.0 or self.margin <= TRUNCATED_PX:
            raise ConfigError(  # a box that close to its window's edge is dropped as cut there
                f"cascade: 'unmatched_scale' in [0, 1] and 'margin' > {TRUNCATED_PX:g} (a refiner "
                f"box within {TRUNCATED_PX:g} px of its window's edge is taken as cut by it); "
                f"got {self.unmatched_scale}/{self.margin}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a bundle declares about its model (see module docstring)."""

    name: str
    arch: ArchSpec | None
    classes: tuple[str, ...]
    gsd_m: float
    levels: tuple[Level, ...]
    score_threshold: float
    input_bands: tuple[str, ...] = ("red", "green", "blue")
    cascade: CascadeRule | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        _kept(self, where, {"gsd_m": {"positive": True}, "score_threshold": {}})
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"{where}: 'score_threshold' in (0, 1), got {self.score_threshold}")
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ConfigError(f"{where}: 'classes' is a list of names, got {list(self.classes)}")
        if len(self.input_bands) != 3:
            raise ConfigError(
                f"{where}: 'input_bands' names the three bands the model reads (red, green, "
                f"blue), got {list(self.input_bands)}"
            )
        if self.cascade is not None:
            _inside_bundle("cascade", self.cascade.detector)
        if self.arch is None and any(lv.detector == FCN for lv in self.levels):
            raise ConfigError(
                f"model {self.name!r}: a level runs the scanning network ('detector': 'fcn') "
                "but the card has no 'arch'"
            )

    @property
    def yolo_files(self) -> tuple[str, ...]:
        """The ultralytics model files the levels and the cascade name (sorted, unique)."""
        names = {lv.detector for lv in self.levels if lv.detector != FCN}
        return tuple(sorted(names | ({self.cascade.detector} if self.cascade else set())))

    @property
    def train_images(self) -> tuple[str, ...]:
        """The images the bundle was trained on (file names in the training data folder)."""
        return tuple(self._split.get("train_images", ()))

    @property
    def val_images(self) -> tuple[str, ...]:
        """The held-out images the card's metrics were measured on (file names in the training
        data folder)."""
        return tuple(self._split.get("val_images", ()))

    @property
    def _split(self) -> dict[str, Any]:
        """The training record that names the split: a cascade's is its scanner's, on whose
        images both of its networks were trained and scored."""
        training: dict[str, Any] = self.extra.get("training", {})
        return training.get("scanner", training)

    def as_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        if d["cascade"] is None:
            d.pop("cascade")
        return {**d, **self.extra}


def _card_from_json(doc: dict[str, Any]) -> ModelCard:
    if not isinstance(doc, dict):
        raise ConfigError(f"a JSON {type(doc).__name__}, not an object")
    missing = [k for k in ("name", "classes", "gsd_m", "levels", "score_threshold") if k not in doc]
    if missing:
        raise ConfigError(f"no {missing[0]!r} (see docs/models.md for a card)")
    if isinstance(doc["classes"], str) or isinstance(doc["levels"], dict | str):
        raise ConfigError("'classes' and 'levels' are lists")
    if not doc["levels"]:
        raise ConfigError(f"model {doc['name']!r}: 'levels' names no level; give at least one")
    arch = doc.get("arch")
    spec = (
        ArchSpec(
            name=arch["name"],
            num_classes=arch["num_classes"],
            in_channels=arch["in_channels"],
            layers=tuple(LayerSpec(**layer) for layer in arch["layers"]),
        )
        if arch
        else None
    )
    known = {
        "name", "arch", "classes", "gsd_m", "levels", "score_threshold", "input_bands", "cascade"
    }  # fmt: skip
    cascade = doc.get("cascade")
    return ModelCard(
        name=doc["name"],
        arch=spec,
        cascade=CascadeRule(**cascade) if cascade else None,
        classes=tuple(doc["classes"]),
        gsd_m=float(doc["gsd_m"]),
        levels=tuple(Level(**lv) for lv in doc["levels"]),
        score_threshold=float(doc["score_threshold"]),
        input_bands=tuple(doc.get("input_bands", ("red", "green", "blue"))),
        extra={k: v for k, v in doc.items() if k not in known},
    )


def bundle_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a bundle given by path or shipped name."""
    p = Path(name_or_path)
    if (p / "card.json").is_file():
        return p
    if (SHIPPED / str(name_or_path) / "card.json").is_file():
        return SHIPPED / str(name_or_path)
    shipped = ", ".join(shipped_models()) or "none shipped"
    if p.suffix.lower() == ".pt" and p.is_file():
        raise ConfigError(
            f"model {str(name_or_path)!r} is a bare ultralytics .pt, which needs the metres per "
            "pixel it was trained at: "
            + option("--model-gsd M", api="load_pt(path, gsd_m=M) passed as bundle=")
            + " (or a bundle folder with a card.json)"
        )
    what = "is not a model bundle (it has no card.json)" if p.exists() else "not found"
    raise ConfigError(
        f"model {str(name_or_path)!r} {what}: give a bundle folder (card.json beside its "
        f"weights: weights.pt, or yolo.pt), a .pt file, or a shipped name ({shipped})"
    )


def shipped_models() -> list[str]:
    """Names of the bundles shipped in the package, sorted."""
    if not SHIPPED.is_dir():
        return []
    return sorted(d.name for d in SHIPPED.iterdir() if (d / "card.json").is_file())


def load_card(name_or_path: str | os.PathLike[str]) -> ModelCard:
    """A bundle's card alone (no weights loaded): what a service needs to validate options,
    and ``plan`` to show a run. The files it names must be in the folder (``plan`` showed a
    run of a bundle ``detect`` then refused)."""
    folder = bundle_dir(name_or_path)
    try:
        card = _card_from_json(json.loads((folder / "card.json").read_text()))
    except ConfigError as exc:  # a value it cannot run, said by the checks
        raise ConfigError(f"{folder}/card.json: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{folder}/card.json is malformed: {exc}") from exc
    missing = [f for f in card.yolo_files if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{folder}: the card needs {missing[0]!r}, which is not in the folder")
    return card


def _write_doc(target: Path, doc: dict[str, Any]) -> Path:
    target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return target


def save_card(folder: str | os.PathLike[str], card: ModelCard) -> Path:
    """Write ``card.json`` into ``folder`` (sorted keys, so a card's file is stable)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return _write_doc(out / "card.json", card.as_json())


def update_card(folder: str | os.PathLike[str], entries: dict[str, Any]) -> Path:
    """Set top-level ``entries`` (measurements, a policy's record) in a bundle's existing
    ``card.json``, keeping every other entry as written, whether this version knows it or not."""
    target = Path(folder) / "card.json"
    doc = json.loads(target.read_text())
    doc.update(entries)
    return _write_doc(target, doc)
