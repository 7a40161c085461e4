"""A model's STAC item (the ``mlm`` Machine Learning Model extension), built from its card.

Result items link to it (``derived_from``), catalogues index it, and ``/v1/models`` serves it:
architecture, tasks, framework, the input bands and ground sample distance the model expects,
its classes, and every weight file with its size and SHA-256 (``file:checksum``, a multihash),
so a result can be traced to the exact weights. ``scripts/write_mlm_items.py`` writes it into
each shipped bundle's folder as :data:`MLM_FILE`; it holds no time of writing.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from geo_hires.models.card import ModelCard, bundle_dir, load_card

__all__ = ["MLM_FILE", "mlm_item", "write_mlm_item"]

MLM_FILE = "mlm.stac.json"
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"


def _multihash(path: Path) -> str:
    """SHA2-256 as a multihash (``1220`` + hex digest), as ``file:checksum`` wants."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "1220" + digest.hexdigest()


def _architecture(card: ModelCard) -> str:
    if card.arch is not None and card.cascade is not None:
        return f"{card.arch.name.upper()} fully convolutional scanner + YOLO refiner (cascade)"
    if card.arch is not None:
        return f"{card.arch.name.upper()} fully convolutional scanning network"
    return "YOLO (ultralytics)"


def _weights(card: ModelCard, folder: Path) -> dict[str, Any]:
    names = (["weights.pt"] if card.arch is not None else []) + list(card.yolo_files)
    zoom = card.extra.get("zoom_policy")
    names += [zoom] if isinstance(zoom, str) else []
    assets = {}
    for name in names:
        path = folder / name
        asset: dict[str, Any] = {
            "href": f"./{name}",
            "type": "application/octet-stream; application=pytorch",
            "title": "zoom policy" if name == zoom else f"weights ({name})",
            "roles": ["mlm:weights"] if name == zoom else ["mlm:model", "mlm:weights"],
        }
        if name != zoom:  # the extension allows an artifact type on model assets only
            asset["mlm:artifact_type"] = "torch.save"
            asset["raster:bands"] = [{"name": b} for b in card.input_bands]
        assets[Path(name).stem] = {
            **asset,
            "file:size": path.stat().st_size,
            "file:checksum": _multihash(path),
        }
    return assets


def _io(card: ModelCard) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bands = list(card.input_bands)
    inputs = [{
        "name": "scene window",
        "bands": bands,
        "input": {"shape": [-1, len(bands), -1, -1],
                  "dim_order": ["batch", "bands", "height", "width"], "data_type": "float32"},
        "description": f"{'/'.join(bands)} at {card.gsd_m} m per pixel, scaled to [0, 1]",
    }]  # fmt: skip
    outputs = [{
        "name": "detections",
        "tasks": ["object-detection"],
        "result": {"shape": [-1, 6], "dim_order": ["batch", "features"], "data_type": "float32"},
        "description": "boxes (x0, y0, x1, y1 in pixels), score, class",
        "classification:classes": [
            {"value": i, "name": n, "description": f"class {n} of the model"}
            for i, n in enumerate(card.classes)
        ],
    }]  # fmt: skip
    return inputs, outputs


def mlm_item(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The MLM item of a bundle (shipped name or folder); hrefs are relative to its folder."""
    folder = bundle_dir(name_or_path)
    card = load_card(folder)
    inputs, outputs = _io(card)
    properties: dict[str, Any] = {
        "datetime": None,
        "start_datetime": "1900-01-01T00:00:00Z",
        "end_datetime": "9999-12-31T23:59:59Z",
        "title": card.name,
        "gsd": card.gsd_m,
        "mlm:name": card.name,
        "mlm:architecture": _architecture(card),
        "mlm:tasks": ["object-detection"],
        "mlm:framework": "PyTorch",
        "mlm:framework_version": metadata.version("torch"),
        "mlm:accelerator": None,
        "mlm:input": inputs,
        "mlm:output": outputs,
        "geo_hires:levels": [
            {"name": lv.name, "target_gsd_m": lv.target_gsd_m, "downsample": lv.downsample}
            for lv in card.levels
        ],
        "geo_hires:score_threshold": card.score_threshold,
    }
    if "licence" in card.extra:
        properties["geo_hires:licence"] = card.extra["licence"]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM, FILE, RASTER],
        "id": card.name,
        "geometry": None,
        "properties": properties,
        "links": [],
        "assets": {
            **_weights(card, folder),
            "card": {"href": "./card.json", "type": "application/json", "title": "model card",
                     "roles": ["metadata"]},
        },
    }  # fmt: skip


def write_mlm_item(name_or_path: str | os.PathLike[str]) -> Path:
    """Write the bundle's MLM item into its folder as :data:`MLM_FILE`."""
    target = bundle_dir(name_or_path) / MLM_FILE
    target.write_text(json.dumps(mlm_item(name_or_path), indent=1) + "\n", encoding="utf-8")
    return target
