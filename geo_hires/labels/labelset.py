"""Labels as parsed, and how they enter a frame: a scene's pixels, or a map CRS.

Geometries become boxes: map-space geometries are moved into the scene's pixels vertex by vertex
(exact for any affine), or kept as map-space envelopes when no scene is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geo_hires.detections import GeoDetections, PixelDetections
from geo_hires.errors import LabelReadError, option
from geo_hires.georef import box_corners, map_to_pixel
from geo_hires.scene.open import Scene

__all__ = ["LabelSet"]


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
                "map-coordinate labels need a scene to be put in pixels; pass "
                + option("--scene", api="scene=")
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
                "pixel-coordinate labels need a scene to be put on the map; pass "
                + option("--scene", api="scene=")
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
    return (x1 > 0) & (x0 < scene.width) & (y1 > 0) & (y0 < scene.height)
