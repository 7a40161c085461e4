"""Read ground truth (or predictions) from any label format, for one scene or for all.

The formats, chosen by extension and, for CSV, by header, are in :mod:`geo_hires.labels.formats`.
"""

from __future__ import annotations

import os
from pathlib import Path

from geo_hires.errors import LabelReadError
from geo_hires.labels.formats import READERS, read_csv
from geo_hires.labels.labelset import LabelSet

__all__ = ["LabelSet", "labels_for", "read_labels"]


def read_labels(path: str | os.PathLike[str], *, image: str | None = None) -> LabelSet:
    """Parse a label file in any supported format.

    Args:
        path: The label file.
        image: File name of the image whose labels to keep, for files that hold several
            images (Airbus CSV, pixel CSV with ``image_path``).

    Raises:
        LabelReadError: Missing file, unknown format or unparsable content.
    """
    p = Path(path)
    if not p.is_file():
        raise LabelReadError(f"label file not found: {p}")
    ext = p.suffix.lower()
    if ext != ".csv" and ext not in READERS:
        raise LabelReadError(
            f"{p}: unknown label format {ext!r}; use .geojson, .csv, .xml (VOC), .txt (DOTA) "
            "or a vector file (.gpkg, .fgb, .shp, .parquet)"
        )
    try:
        return read_csv(p, image) if ext == ".csv" else READERS[ext](p)
    except UnicodeDecodeError as exc:
        raise LabelReadError(f"{p}: not UTF-8 text ({exc}); save it as UTF-8") from exc


_LABEL_FORMATS = (".geojson", ".json", ".csv", ".xml", ".txt")
LABEL_SUFFIXES = (".csv", *READERS)
"""The extensions :func:`read_labels` reads (a folder's per-scene files are found by them)."""


def labels_for(scene: str | os.PathLike[str], labels: str | os.PathLike[str]) -> LabelSet:
    """The labels of one scene from a shared label file or a folder of per-scene files.

    Args:
        scene: The scene file; its name selects its rows of a shared file (none there: no
            objects), its stem picks ``<stem>.<ext>`` in a folder, a file of that scene alone
            whatever image name its rows give (one only).
        labels: A label file (holding this scene, maybe others) or a folder.
    """
    path, name = Path(labels), Path(scene).name
    if path.is_dir():
        stem = Path(scene).stem
        found = sorted(  # the label formats before detect's own vector outputs beside them
            (p for p in path.iterdir() if p.stem == stem and p.suffix.lower() in LABEL_SUFFIXES),
            key=lambda p: (p.suffix.lower() not in _LABEL_FORMATS, p.name),
        )
        if not found:
            raise LabelReadError(f"no label file for {name} in {path}")
        return read_labels(found[0])
    return read_labels(path, image=name)
