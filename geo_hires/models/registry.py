"""Model bundles: weights plus a card that says how to run them.

A bundle is a folder with ``weights.pt`` (a BatchNorm-folded state dict) and ``card.json``:
architecture, classes, the GSD the model was trained for, its YOLT level plan (which objects
each level keeps), the default score threshold, licence, training data and metrics. Shipped
bundles live in ``geo_hires/models/weights/NAME``; any other folder can be given by path.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from geo_hires.errors import ConfigError
from geo_hires.models.fcn import ArchSpec, FCNDetector, LayerSpec, fold_batchnorm

__all__ = [
    "SHIPPED",
    "LevelRule",
    "ModelCard",
    "load_card",
    "load_model",
    "save_model",
    "shipped_models",
]

SHIPPED = Path(__file__).parent / "weights"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelRule:
    """One level of a model's plan: its ground resolution and the object sizes it keeps.

    Attributes:
        name: Level name (goes into each detection's ``level``).
        target_gsd_m: Ground sample distance the level runs at; the downsample factor is
            ``round(target_gsd_m / scene_gsd_m)``.
        downsample: Factor used when the scene's GSD is unknown (relative to the model's GSD).
        min_size, max_size: Longest box side, in *level* pixels, that this level reports.
    """

    name: str
    target_gsd_m: float
    downsample: int
    min_size: float = 0.0
    max_size: float = 1e9


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a bundle declares about its model (see module docstring)."""

    name: str
    arch: ArchSpec
    classes: tuple[str, ...]
    gsd_m: float
    levels: tuple[LevelRule, ...]
    score_threshold: float
    input_bands: tuple[str, ...] = ("red", "green", "blue")
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return {**d, **self.extra}


def _card_from_json(doc: dict[str, Any]) -> ModelCard:
    arch = doc["arch"]
    spec = ArchSpec(
        name=arch["name"],
        num_classes=arch["num_classes"],
        in_channels=arch["in_channels"],
        layers=tuple(LayerSpec(**layer) for layer in arch["layers"]),
    )
    known = {"name", "arch", "classes", "gsd_m", "levels", "score_threshold", "input_bands"}
    return ModelCard(
        name=doc["name"],
        arch=spec,
        classes=tuple(doc["classes"]),
        gsd_m=float(doc["gsd_m"]),
        levels=tuple(LevelRule(**lv) for lv in doc["levels"]),
        score_threshold=float(doc["score_threshold"]),
        input_bands=tuple(doc.get("input_bands", ("red", "green", "blue"))),
        extra={k: v for k, v in doc.items() if k not in known},
    )


def _bundle_dir(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if (p / "card.json").is_file():
        return p
    if (SHIPPED / str(name_or_path) / "card.json").is_file():
        return SHIPPED / str(name_or_path)
    shipped = shipped_models()
    raise ConfigError(
        f"model {str(name_or_path)!r} not found: give a bundle folder (card.json + weights.pt) "
        f"or a shipped name ({', '.join(shipped) or 'none shipped'})"
    )


def shipped_models() -> list[str]:
    """Names of the bundles shipped in the package, sorted."""
    if not SHIPPED.is_dir():
        return []
    return sorted(d.name for d in SHIPPED.iterdir() if (d / "card.json").is_file())


def load_card(name_or_path: str | os.PathLike[str]) -> ModelCard:
    """A bundle's card alone (no weights): what a service needs to validate options."""
    folder = _bundle_dir(name_or_path)
    try:
        return _card_from_json(json.loads((folder / "card.json").read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{folder}/card.json is malformed: {exc}") from exc


def load_model(name_or_path: str | os.PathLike[str]) -> tuple[FCNDetector, ModelCard]:
    """Load a bundle; the model comes back folded, in eval mode, on the CPU."""
    folder = _bundle_dir(name_or_path)
    card = load_card(folder)
    model = fold_batchnorm(FCNDetector(card.arch))
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), card


def save_model(folder: str | os.PathLike[str], model: FCNDetector, card: ModelCard) -> Path:
    """Fold BatchNorm and write ``weights.pt`` + ``card.json`` into ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    folded = fold_batchnorm(model).cpu()
    torch.save(folded.state_dict(), out / "weights.pt")
    (out / "card.json").write_text(json.dumps(card.as_json(), indent=2, sort_keys=True) + "\n")
    return out
