"""Read ground truth (or predictions) from the label formats remote-sensing data ships in.

Formats, chosen by extension and, for CSV, by header:

* GeoJSON (``.geojson``/``.json``): Polygon/MultiPolygon features in any CRS (legacy ``crs``
  member, else WGS84). Our own pixel-space output (``geo_hires.pixel_space``) reads as pixels.
  Class from ``class``/``label``/``category``; score from ``score`` (default 1).
* Pixel CSV: header with ``xmin,ymin,xmax,ymax`` and ``label`` (or ``class``), optional
  ``score`` and ``image_path``.
* Airbus aircraft CSV: ``image_id,geometry,class`` with a pixel polygon ``[(x, y), ...]``.
* Pascal VOC XML: ``object/name`` and ``object/bndbox``.
* DOTA txt: ``x1 y1 ... x4 y4 class difficult`` lines (header lines are skipped).

Geometries become boxes: map-space geometries are moved into the scene's pixels vertex by vertex
(exact for any affine), or kept as map-space envelopes when no scene is given.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geo_hires.detections import GeoDetections, PixelDetections
from geo_hires.errors import LabelReadError
from geo_hires.georef import box_corners, map_to_pixel
from geo_hires.scene.open import Scene

__all__ = ["LabelSet", "labels_for", "read_labels"]

_CLASS_KEYS = ("class", "label", "category", "class_name")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSet:
    """Labels as parsed, before they are put in a frame.

    Attributes:
        rings: One ``(K, 2)`` float64 vertex array per object (a box is 4 vertices).
        names: Class name per object.
        scores: Score per object (1.0 for ground truth).
        crs: CRS of the vertices (``"EPSG:n"`` or WKT), ``None`` for pixel coordinates.
    """

    rings: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    scores: tuple[float, ...]
    crs: str | None

    def renamed(self, class_map: Mapping[str, str]) -> LabelSet:
        """The same labels with classes renamed (``{old: new}``; others kept)."""
        return dataclasses.replace(self, names=tuple(class_map.get(n, n) for n in self.names))

    def _classes(self, class_names: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
        table = tuple(class_names) if class_names else tuple(sorted(set(self.names)))
        missing = sorted(set(self.names) - set(table))
        if missing:
            raise LabelReadError(f"labels use classes {missing} not in the class table {table}")
        return table, np.array([table.index(n) for n in self.names], np.int64)

    def _bounds(self, rings: Sequence[np.ndarray]) -> np.ndarray:
        if not rings:
            return np.zeros((0, 4))
        return np.array(
            [[r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()] for r in rings]
        )

    def _pixel_rings(self, scene: Scene | None) -> tuple[np.ndarray, ...]:
        if self.crs is not None and scene is None:
            raise LabelReadError(
                "map-coordinate labels need a scene to be put in pixels; pass --scene"
            )
        if self.crs is not None and scene is not None and scene.crs_wkt is None:
            raise LabelReadError(  # its pixels are not on any map: the coordinates would be
                f"the labels are in map coordinates, but {Path(scene.path).name} has no CRS; "
                "give the scene they were made on, or labels in pixels"
            )
        if self.crs is not None and scene is not None:
            return tuple(map_to_pixel(r, self.crs, scene) for r in self.rings)
        return self.rings

    def to_pixels(
        self, scene: Scene | None, class_names: Sequence[str] | None = None
    ) -> PixelDetections:
        """Pixel boxes bounding each object in ``scene`` (needed when ``crs`` is set).

        With a scene, only the objects on it, their boxes clipped to its edges: a label file
        shared by several scenes holds the others' objects too, which would count as missed
        (evaluation) or be taught on pixels that are not there (training).
        """
        table, classes = self._classes(class_names)
        bounds = self._bounds(self._pixel_rings(scene))
        dets = PixelDetections.build(bounds, self.scores, classes, class_names=table)
        if scene is None:
            return dets
        clipped = np.clip(bounds, 0.0, [scene.width, scene.height] * 2)
        return dataclasses.replace(dets, boxes=clipped).take(_on_scene(bounds, scene))

    def to_oriented(
        self, scene: Scene | None, class_names: Sequence[str] | None = None
    ) -> PixelDetections:
        """Oriented boxes in ``scene``'s pixels: each object's minimum rotated rectangle (its
        own corners when it is one, as DOTA quads nearly are); with a scene, the objects on it
        (as :meth:`to_pixels`), their corners as drawn."""
        import shapely

        table, classes = self._classes(class_names)
        rings = self._pixel_rings(scene)
        corners = [
            np.asarray(shapely.oriented_envelope(shapely.Polygon(r)).exterior.coords)[:4]
            if len(r) >= 3
            else np.repeat(r[:1], 4, axis=0)
            for r in rings
        ]
        dets = PixelDetections.oriented(
            np.asarray(corners, np.float64).reshape(-1, 4, 2),
            self.scores,
            classes,
            class_names=table,
        )
        return dets if scene is None else dets.take(_on_scene(self._bounds(rings), scene))

    def to_map(self, class_names: Sequence[str] | None = None) -> GeoDetections:
        """Envelope polygons in the labels' own CRS (map-coordinate labels only)."""
        if self.crs is None:
            raise LabelReadError(
                "pixel-coordinate labels need a scene to be put on the map; pass --scene"
            )
        table, classes = self._classes(class_names)
        return GeoDetections(
            polygons=box_corners(self._bounds(self.rings)).reshape(-1, 4, 2),
            scores=np.asarray(self.scores, np.float64),
            classes=classes,
            levels=np.zeros(len(classes), np.int64),
            class_names=table,
            level_names=("full",),
            crs=self.crs,
        )


def _on_scene(bounds: np.ndarray, scene: Scene) -> np.ndarray:
    """Which ``(N, 4)`` pixel boxes overlap the scene (a point on it counts)."""
    x0, y0, x1, y1 = bounds.T
    return (x1 > 0) & (x0 < scene.width) & (y1 > 0) & (y0 < scene.height)  # type: ignore[no-any-return]


def _geojson_crs(doc: dict[str, Any]) -> str | None:
    meta = doc.get("geo_hires") or {}
    if meta.get("pixel_space"):
        return None
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if not name:
        return "EPSG:4326"
    from pyproj import CRS

    try:
        return CRS.from_user_input(name).to_wkt()
    except Exception as exc:
        raise LabelReadError(f"unknown GeoJSON crs {name!r}: {exc}") from exc


def _read_geojson(path: Path) -> LabelSet:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelReadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise LabelReadError(f"{path}: expected a GeoJSON FeatureCollection")
    rings, names, scores = [], [], []
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise LabelReadError(f"{path}: 'features' must be a list")
    for i, feat in enumerate(features):
        ring = _ring(feat, path, i)
        if ring is None:
            continue
        props = feat.get("properties") or {}
        rings.append(ring)
        names.append(str(next((props[k] for k in _CLASS_KEYS if _named(props.get(k))), "object")))
        scores.append(_score(props.get("score"), path, i))
    return LabelSet(
        rings=tuple(rings), names=tuple(names), scores=tuple(scores), crs=_geojson_crs(doc)
    )


def _named(value: object) -> bool:
    """Whether a class property holds a name: ``0`` does (a numeric class id), empty does not."""
    return value is not None and value != ""


def _ring(feat: object, path: Path, index: int) -> npt.NDArray[np.float64] | None:
    """The outer ring(s) of a feature's polygon; ``None`` for a feature without one (a point,
    a null or empty geometry, as GIS programs write them)."""
    geom = (feat.get("geometry") if isinstance(feat, dict) else None) or {}
    kind, coords = geom.get("type"), geom.get("coordinates") or []
    if kind not in ("Polygon", "MultiPolygon"):
        return None
    try:
        parts = [coords[0]] if kind == "Polygon" else [p[0] for p in coords]  # IndexError: []
        return np.concatenate([np.asarray(p, np.float64)[:, :2] for p in parts])
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        if not coords:  # an empty polygon: no object
            return None
        raise LabelReadError(f"{path}: feature {index} has unreadable coordinates ({exc})") from exc


def _score(value: object, path: Path, index: int) -> float:
    """A feature's ``score``: 1.0 when absent or null (truth, or a GIS export's empty field)."""
    if value is None or value == "":
        return 1.0
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LabelReadError(
            f"{path}: feature {index} has score {value!r}; give a number or leave it empty"
        ) from None


def _box_ring(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _read_csv(path: Path, image: str | None) -> LabelSet:
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's BOM
        rows = list(csv.DictReader(fh))
    short = next((i for i, r in enumerate(rows) if None in r.values()), None)
    if short is not None:
        raise LabelReadError(
            f"{path}: row {short + 2} has fewer fields than the header; fill in every column"
        )
    if not rows:
        return LabelSet(rings=(), names=(), scores=(), crs=None)
    header = set(rows[0])
    if {"geometry", "image_id"} <= header:
        return _airbus_rows(path, rows, image)
    if not {"xmin", "ymin", "xmax", "ymax"} <= header:
        raise LabelReadError(
            f"{path}: CSV needs columns xmin,ymin,xmax,ymax,label or image_id,geometry,class; "
            f"found {sorted(header)}"
        )
    key = next((k for k in ("label", "class", "name") if k in header), None)
    if "image_path" in header:
        rows = _rows_of(path, rows, image, lambda r: Path(r["image_path"]).name)
    try:
        rings = [_box_ring(*(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in rows]
        scores = [float(r.get("score") or 1.0) for r in rows]
    except ValueError as exc:
        raise LabelReadError(f"{path}: non-numeric box coordinate ({exc})") from exc
    names = [r[key] if key else "object" for r in rows]
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=tuple(scores), crs=None)


Row = dict[str, str]


def _rows_of(
    path: Path, rows: list[Row], image: str | None, image_of: Callable[[Row], str]
) -> list[Row]:
    """The rows of ``image`` (``image_of`` names each row's): none when it has none (an image
    without objects), never another image's; a file of several images needs ``image``."""
    if image is None:
        count = len({image_of(r) for r in rows})
        if count > 1:
            raise LabelReadError(
                f"{path} holds labels of {count} images; pass --scene (or image=) to pick one"
            )
        return rows
    return [r for r in rows if image_of(r) == image]


def _airbus_rows(path: Path, rows: list[Row], image: str | None) -> LabelSet:
    rows = _rows_of(path, rows, image, lambda r: r["image_id"])
    try:
        rings = [np.asarray(ast.literal_eval(r["geometry"]), np.float64) for r in rows]
    except (ValueError, SyntaxError) as exc:
        raise LabelReadError(f"{path}: unreadable geometry ({exc})") from exc
    names = tuple(r.get("class", "object") for r in rows)
    return LabelSet(rings=tuple(rings), names=names, scores=(1.0,) * len(rows), crs=None)


def _read_voc(path: Path) -> LabelSet:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LabelReadError(f"{path}: not valid XML ({exc})") from exc
    rings, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            coords = [float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as exc:
            raise LabelReadError(f"{path}: bad bndbox ({exc})") from exc
        rings.append(_box_ring(*coords))
        names.append(obj.findtext("name", "object"))
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=(1.0,) * len(rings), crs=None)


def _read_dota(path: Path) -> LabelSet:
    rings, names = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 9 or ":" in line:
            continue
        try:
            rings.append(np.asarray(parts[:8], np.float64).reshape(4, 2))
        except ValueError as exc:
            raise LabelReadError(f"{path}: bad DOTA line {line!r} ({exc})") from exc
        names.append(parts[8])
    return LabelSet(rings=tuple(rings), names=tuple(names), scores=(1.0,) * len(rings), crs=None)


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
    readers: dict[str, Callable[[Path], LabelSet]] = {
        ".geojson": _read_geojson,
        ".json": _read_geojson,
        ".xml": _read_voc,
        ".txt": _read_dota,
    }
    if ext == ".csv":
        return _read_csv(p, image)
    if ext not in readers:
        raise LabelReadError(
            f"{p}: unknown label format {ext!r}; use .geojson, .csv, .xml (VOC) or .txt (DOTA)"
        )
    return readers[ext](p)


LABEL_SUFFIXES = (".geojson", ".json", ".csv", ".xml", ".txt")
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
        found = sorted(
            p for p in path.iterdir() if p.stem == stem and p.suffix.lower() in LABEL_SUFFIXES
        )
        if not found:
            raise LabelReadError(f"no label file for {name} in {path}")
        return read_labels(found[0])
    return read_labels(path, image=name)
