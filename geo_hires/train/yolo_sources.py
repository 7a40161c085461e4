"""Where a YOLO's starting weights come from: a ``.pt`` file, or the YOLO of a bundle (a
shipped name or a folder), for ``train --init`` and ``cascade --refiner``; and whether a
training of one of the architectures geo_hires trains can start from them."""

from __future__ import annotations

import os
from pathlib import Path

from geo_hires.errors import ConfigError
from geo_hires.models.card import ModelCard, bundle_dir, load_card

__all__ = ["YOLO_ARCHS", "check_init", "yolo_source", "yolo_weights"]

YOLO_ARCHS = ("yolov8n", "yolo11n", "yolov8n-obb", "yolo11n-obb")


def yolo_source(
    source: str | os.PathLike[str], *, flag: str = "--init"
) -> tuple[Path, ModelCard | None]:
    """A YOLO weights file and the card it comes with: ``source`` itself (no card) when it is
    a ``.pt`` file, else the first YOLO file of the bundle it names (a name or a folder).
    ``flag`` names the option in errors."""
    path = Path(source)
    if path.suffix == ".pt":
        if not path.is_file():
            raise ConfigError(f"{flag} {source}: no such file")
        return path, None
    folder = bundle_dir(source)
    card = load_card(folder)
    if not card.yolo_files:
        raise ConfigError(f"{flag} {source}: that bundle has no YOLO weights; give a YOLO bundle")
    return folder / card.yolo_files[0], card


def yolo_weights(source: str | os.PathLike[str], *, flag: str = "--init") -> Path:
    """The weights file of :func:`yolo_source`."""
    return yolo_source(source, flag=flag)[0]


def check_init(init: str | os.PathLike[str], arch: str) -> None:
    """Refuse an ``--init`` that cannot start a training of ``arch`` before any chip is made
    (it was found out after them, or as ultralytics' traceback): not an ultralytics detect or
    obb model (:func:`~geo_hires.models.yolo.load_yolo`'s checks), or another architecture."""
    from geo_hires.models.yolo import load_yolo

    network = load_yolo(yolo_weights(init)).model.model
    built = Path(str(getattr(network, "yaml", {}).get("yaml_file", ""))).stem or "custom network"
    if built not in YOLO_ARCHS:
        raise ConfigError(
            f"--init {init} is a {built}; geo_hires trains {', '.join(YOLO_ARCHS)}: start from "
            "one of those, or run yours as it is (detect --model FILE.pt --model-gsd M)"
        )
    if built != arch:
        raise ConfigError(f"--init {init} is a {built}; give --arch {built}")
