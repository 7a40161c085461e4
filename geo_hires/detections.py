"""Detection sets whose coordinate frame is in their type.

``PixelDetections`` hold axis-aligned boxes in level-0 scene pixels; ``GeoDetections`` hold
4-corner polygons in a map CRS (or in pixel space when the scene has no CRS). Keeping the frame
in the type means a function that needs map coordinates cannot be handed pixels by mistake.
Both are frozen columnar values: numpy arrays of equal length plus a class-name table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from geo_hires.errors import ConfigError

__all__ = ["GeoDetections", "PixelDetections", "box_corners"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def box_corners(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(N, 4)`` xyxy boxes → ``(N, 4, 2)`` corners TL, TR, BR, BL in the same frame."""
    x0, y0, x1, y1 = boxes.T
    return np.stack(
        [
            np.stack([x0, y0], 1),
            np.stack([x1, y0], 1),
            np.stack([x1, y1], 1),
            np.stack([x0, y1], 1),
        ],
        axis=1,
    ).reshape(-1, 4, 2)


def _freeze(value: object, names: Sequence[str]) -> None:
    """Give a frozen value read-only arrays of its own.

    Why: ``frozen=True`` stops rebinding a field, not writing into its array; a caller who
    built detections from their own array (shared by ``np.asarray``) and then edited it would
    change the detections, and a caller editing ``dets.boxes`` would change every set sharing
    it through ``dataclasses.replace``.
    """
    for name in names:
        arr = getattr(value, name)
        if arr is not None and arr.flags.writeable:
            own = arr.copy()
            own.flags.writeable = False
            object.__setattr__(value, name, own)


def _check_lengths(n: int, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ConfigError(f"detections column {name!r} has {arr.shape[0]} rows, expected {n}")


def _check_classes(classes: IntArray, class_names: tuple[str, ...]) -> None:
    if classes.size and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise ConfigError(
            f"class indices must lie in [0, {len(class_names)}), "
            f"got {classes.min()}..{classes.max()}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class PixelDetections:
    """Axis-aligned boxes in level-0 scene pixels.

    Attributes:
        boxes: ``(N, 4)`` float64, columns ``x_min, y_min, x_max, y_max`` in level-0 pixels
            (x = column, y = row, pixel corners, half-open like windows).
        scores: ``(N,)`` float64 confidence in ``[0, 1]``.
        classes: ``(N,)`` int64 index into ``class_names``.
        levels: ``(N,)`` int64 index of the scale level that produced each box.
        class_names: Names of the classes.
        level_names: Names of the levels.
        corners: ``(N, 4, 2)`` corners of *oriented* boxes (an OBB model's), level-0 pixels,
            or ``None`` when every box is axis-aligned; ``boxes`` are then their envelopes, so
            everything that needs only extent (clipping, AOI, windows) works unchanged.
    """

    boxes: FloatArray
    scores: FloatArray
    classes: IntArray
    levels: IntArray
    class_names: tuple[str, ...]
    level_names: tuple[str, ...] = ("full",)
    corners: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ConfigError(f"boxes must have shape (N, 4), got {self.boxes.shape}")
        n = self.boxes.shape[0]
        _check_lengths(n, scores=self.scores, classes=self.classes, levels=self.levels)
        _check_classes(self.classes, self.class_names)
        if self.corners is not None and self.corners.shape != (n, 4, 2):
            raise ConfigError(f"corners must have shape ({n}, 4, 2), got {self.corners.shape}")
        _freeze(self, ("boxes", "scores", "classes", "levels", "corners"))

    @classmethod
    def oriented(
        cls,
        corners: npt.ArrayLike,
        scores: npt.ArrayLike,
        classes: npt.ArrayLike,
        *,
        class_names: Sequence[str],
        levels: npt.ArrayLike | None = None,
        level_names: Sequence[str] = ("full",),
    ) -> PixelDetections:
        """Oriented boxes from their ``(N, 4, 2)`` corners (envelopes computed)."""
        c = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
        env = np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1)
        return dataclasses.replace(
            cls.build(env, scores, classes, class_names=class_names, levels=levels,
                      level_names=level_names),
            corners=c,
        )  # fmt: skip

    @classmethod
    def build(
        cls,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike,
        classes: npt.ArrayLike,
        *,
        class_names: Sequence[str],
        levels: npt.ArrayLike | None = None,
        level_names: Sequence[str] = ("full",),
    ) -> PixelDetections:
        """Build from array-likes, coercing dtypes (levels default to 0)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lv = np.zeros(len(b), np.int64) if levels is None else np.asarray(levels, np.int64)
        return cls(
            boxes=b,
            scores=np.asarray(scores, dtype=np.float64).reshape(-1),
            classes=np.asarray(classes, dtype=np.int64).reshape(-1),
            levels=lv.reshape(-1),
            class_names=tuple(class_names),
            level_names=tuple(level_names),
        )

    @classmethod
    def empty(
        cls, class_names: Sequence[str], level_names: Sequence[str] = ("full",)
    ) -> PixelDetections:
        """An empty set with the given class and level tables."""
        return cls.build(np.zeros((0, 4)), [], [], class_names=class_names, level_names=level_names)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, index: npt.ArrayLike) -> PixelDetections:
        """Rows selected by an integer index array or a boolean mask."""
        idx = np.asarray(index)
        if idx.size == 0 and idx.dtype != np.bool_:
            idx = idx.astype(np.int64)  # ``[]`` selects nothing (numpy reads it as float)
        return dataclasses.replace(
            self,
            boxes=self.boxes[idx].reshape(-1, 4),
            scores=self.scores[idx],
            classes=self.classes[idx],
            levels=self.levels[idx],
            corners=None if self.corners is None else self.corners[idx].reshape(-1, 4, 2),
        )

    def shifted(self, dx: float, dy: float) -> PixelDetections:
        """The same boxes moved by ``(dx, dy)`` pixels (window frame → scene frame)."""
        return dataclasses.replace(
            self,
            boxes=self.boxes + np.array([dx, dy, dx, dy]),
            corners=None if self.corners is None else self.corners + np.array([dx, dy]),
        )

    def corner_points(self) -> FloatArray:
        """``(N, 4, 2)`` corners: the oriented ones, else the boxes' TL, TR, BR, BL."""
        return self.corners if self.corners is not None else box_corners(self.boxes)

    def canonical_order(self) -> PixelDetections:
        """Rows sorted by level, class, descending score, then position.

        Why: merge order depends on how windows were scheduled; sorting makes exports
        byte-identical whatever the executor did.
        """
        corners = () if self.corners is None else tuple(self.corners.reshape(-1, 8).T)
        keys = (
            *corners,  # least significant: mirror-image oriented boxes share their envelope
            self.boxes[:, 3],
            self.boxes[:, 2],
            self.boxes[:, 0],
            self.boxes[:, 1],
            -self.scores,
            self.classes,
            self.levels,
        )
        return self.take(np.lexsort(keys))

    @staticmethod
    def concat(parts: Sequence[PixelDetections]) -> PixelDetections:
        """Concatenate sets sharing class and level tables."""
        if not parts:
            raise ConfigError("concat needs at least one PixelDetections")
        first = parts[0]
        for p in parts[1:]:
            if p.class_names != first.class_names or p.level_names != first.level_names:
                raise ConfigError("cannot concat detections with different class or level tables")
        return dataclasses.replace(
            first,
            boxes=np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
            scores=np.concatenate([p.scores for p in parts]),
            classes=np.concatenate([p.classes for p in parts]),
            levels=np.concatenate([p.levels for p in parts]),
            corners=np.concatenate([p.corner_points() for p in parts])
            if any(p.corners is not None and len(p) for p in parts)  # an empty part's: none
            else None,
        )


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class GeoDetections:
    """Four-corner polygons in a map CRS.

    Attributes:
        polygons: ``(N, 4, 2)`` float64; corners ``(x, y)`` in the CRS's axis order as
            ``always_xy`` (easting/longitude first), in the order top-left, top-right,
            bottom-right, bottom-left of the source pixel box.
        scores, classes, levels, class_names, level_names: As in :class:`PixelDetections`.
        crs: WKT of the CRS, or ``None`` for pixel space (scene without a CRS).
        dimensions: ``(N, 3)`` heading (degrees clockwise from grid north, in ``[0, 180)``:
            an oriented box has no front), length and width in metres of *oriented* boxes,
            measured in map space; ``None`` for axis-aligned boxes or scenes without a CRS.
    """

    polygons: FloatArray
    scores: FloatArray
    classes: IntArray
    levels: IntArray
    class_names: tuple[str, ...]
    level_names: tuple[str, ...]
    crs: str | None
    dimensions: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.polygons.ndim != 3 or self.polygons.shape[1:] != (4, 2):
            raise ConfigError(f"polygons must have shape (N, 4, 2), got {self.polygons.shape}")
        n = self.polygons.shape[0]
        _check_lengths(n, scores=self.scores, classes=self.classes, levels=self.levels)
        _check_classes(self.classes, self.class_names)
        _freeze(self, ("polygons", "scores", "classes", "levels", "dimensions"))

    def __len__(self) -> int:
        return int(self.polygons.shape[0])

    def envelopes(self) -> FloatArray:
        """``(N, 4)`` axis-aligned bounds ``x_min, y_min, x_max, y_max`` in the CRS."""
        xs, ys = self.polygons[:, :, 0], self.polygons[:, :, 1]
        return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
