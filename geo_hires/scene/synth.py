"""Seeded synthetic scenes with known ground truth, written strip by strip.

Why: exactness, scale and fault tests need scenes of any size with perfect labels. The writer
streams horizontal strips (one block row at a time), so a gigapixel scene is written with memory
proportional to its width, and every pixel depends only on the seed and its position, never on
the write order.

Objects come in two classes of different sizes: ``vehicle`` (filled rectangles, 8-20 px) and
``aircraft`` (a fuselage crossed by wings, 40-150 px), on a textured background of smooth
sinusoids plus pixel noise. With ``nodata=True`` a triangular collar in the lower-left corner is
nodata (value 0), as on the edge of a real acquisition; objects touching it are left out.
"""

from __future__ import annotations

import dataclasses
import enum
import os

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.windows import Window
from tqdm import tqdm

from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError

__all__ = ["CLASS_NAMES", "Density", "SynthSpec", "plan_objects", "write_synthetic"]

CLASS_NAMES = ("vehicle", "aircraft")
_STRIP = 256
_AREA_PER_OBJECT = {"sparse": 250 * 250, "dense": 70 * 70}


class Density(enum.Enum):
    """How crowded the synthetic scene is."""

    SPARSE = "sparse"
    DENSE = "dense"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthSpec:
    """A synthetic scene.

    Attributes:
        width, height: Size in pixels.
        seed: Everything (objects, texture, noise) follows from it.
        density: Objects per area.
        nodata: Add a nodata collar in the lower-left corner.
        gsd_m: Pixel size in metres (UTM zone 33N, origin near 15°E 45°N).
    """

    width: int
    height: int
    seed: int = 0
    density: Density = Density.SPARSE
    nodata: bool = False
    gsd_m: float = 0.5

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ConfigError(
                f"synthetic scenes must be at least 16x16 px, got {self.width}x{self.height}"
            )
        if self.gsd_m <= 0:
            raise ConfigError("gsd_m must be > 0")

    @property
    def transform(self) -> Affine:
        return Affine(self.gsd_m, 0.0, 500_000.0, 0.0, -self.gsd_m, 5_000_000.0)

    def in_collar(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        """Whether pixel coordinates lie in the nodata collar (always False without one)."""
        if not self.nodata:
            return np.zeros(np.broadcast(x, y).shape, bool)
        size = min(self.width, self.height) / 3
        return x + (self.height - y) < size


def plan_objects(spec: SynthSpec) -> tuple[PixelDetections, npt.NDArray[np.uint8]]:
    """Boxes (sorted by top edge) and their ``(N, 3)`` uint8 colours."""
    rng = np.random.default_rng([spec.seed, 1])
    n = max(1, round(spec.width * spec.height / _AREA_PER_OBJECT[spec.density.value]))
    cls = (rng.random(n) < 0.3).astype(np.int64)
    size = np.where(cls == 1, rng.uniform(40, 150, n), rng.uniform(8, 20, n))
    aspect = np.where(cls == 1, rng.uniform(0.75, 1.0, n), rng.uniform(0.45, 0.8, n))
    vertical = rng.random(n) < 0.5
    w = np.round(np.where(vertical, size * aspect, size))
    h = np.round(np.where(vertical, size, size * aspect))
    x0 = np.floor(rng.uniform(0, np.maximum(spec.width - w, 1)))
    y0 = np.floor(rng.uniform(0, np.maximum(spec.height - h, 1)))
    boxes = np.stack([x0, y0, np.minimum(x0 + w, spec.width), np.minimum(y0 + h, spec.height)], 1)
    colours = rng.integers(150, 256, (n, 3)).astype(np.uint8)
    colours[cls == 1] //= 2
    colours[cls == 1] += 128
    keep = ~(spec.in_collar(boxes[:, 0], boxes[:, 3])) & _non_overlapping(boxes, gap=4)
    order = np.argsort(boxes[keep, 1], kind="stable")
    dets = PixelDetections.build(
        boxes[keep][order], np.ones(order.size), cls[keep][order], class_names=CLASS_NAMES
    )
    return dets, colours[keep][order]


def _non_overlapping(boxes: npt.NDArray[np.float64], *, gap: float) -> npt.NDArray[np.bool_]:
    """Greedy mask keeping boxes that stay ``gap`` px clear of every earlier kept box.

    Why: occluded objects make ground truth ambiguous. A grid hash keeps this linear.
    """
    cell = 160.0
    grid: dict[tuple[int, int], list[int]] = {}
    keep = np.zeros(len(boxes), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy = int(x0 // cell), int(y0 // cell)
        near = [
            j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in grid.get((cx + dx, cy + dy), ())
        ]
        if near:
            b = boxes[near]
            hit = (
                (b[:, 0] < x1 + gap)
                & (b[:, 2] > x0 - gap)
                & (b[:, 1] < y1 + gap)
                & (b[:, 3] > y0 - gap)
            )
            if hit.any():
                continue
        keep[i] = True
        grid.setdefault((cx, cy), []).append(i)
    return keep


def _background(spec: SynthSpec, r0: int, r1: int) -> npt.NDArray[np.uint8]:
    """``(3, r1-r0, width)`` textured background; depends only on seed and position."""
    rng = np.random.default_rng([spec.seed, 2])
    fx, fy, ph = (
        rng.uniform(0.002, 0.02, 3),
        rng.uniform(0.002, 0.02, 3),
        rng.uniform(0, 6.3, (2, 3)),
    )
    base = np.array([70.0, 85.0, 60.0])
    xs, ys = np.arange(spec.width), np.arange(r0, r1)
    noise = np.random.default_rng([spec.seed, 3, r0]).integers(
        0, 24, (3, r1 - r0, spec.width), np.uint8
    )
    out = np.empty((3, r1 - r0, spec.width), np.uint8)
    for b in range(3):
        gx = 18 * np.sin(xs * fx[b] + ph[0, b])
        gy = 18 * np.sin(ys * fy[b] + ph[1, b])
        out[b] = np.clip(base[b] + gy[:, None] + gx[None, :], 1, 230).astype(np.uint8)
    return out + noise


def _draw(
    strip: npt.NDArray[np.uint8],
    r0: int,
    box: npt.NDArray[np.float64],
    cls: int,
    colour: npt.NDArray[np.uint8],
) -> None:
    x0, y0, x1, y1 = (int(v) for v in box)
    if cls == 0:
        shapes = [(x0, y0, x1, y1)]
    else:
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        tw, th = max(3, (x1 - x0) // 7), max(3, (y1 - y0) // 7)
        if (x1 - x0) <= (y1 - y0):
            shapes = [(cx - tw, y0, cx + tw, y1), (x0, cy - th, x1, cy + th)]
        else:
            shapes = [(x0, cy - th, x1, cy + th), (cx - tw, y0, cx + tw, y1)]
    h = strip.shape[1]
    for sx0, sy0, sx1, sy1 in shapes:
        a, b = max(sy0 - r0, 0), min(sy1 - r0, h)
        if a < b:
            strip[:, a:b, sx0:sx1] = colour[:, None, None]


def _write_strips(
    dst: rasterio.io.DatasetWriter,
    spec: SynthSpec,
    truth: PixelDetections,
    colours: npt.NDArray[np.uint8],
    progress: bool,
) -> None:
    tops = truth.boxes[:, 1]
    for r0 in tqdm(range(0, spec.height, _STRIP), desc="synth", unit="strip", disable=not progress):
        r1 = min(r0 + _STRIP, spec.height)
        strip = _background(spec, r0, r1)
        lo, hi = np.searchsorted(tops, [r0 - 160, r1])
        for i in range(lo, hi):
            if truth.boxes[i, 3] > r0:
                _draw(strip, r0, truth.boxes[i], int(truth.classes[i]), colours[i])
        if spec.nodata:
            ys = np.arange(r0, r1, dtype=np.float64)[:, None]
            xs = np.arange(spec.width, dtype=np.float64)[None, :]
            strip[:, spec.in_collar(xs, ys)] = 0
        dst.write(strip, window=Window(0, r0, spec.width, r1 - r0))


def write_synthetic(
    path: str | os.PathLike[str], spec: SynthSpec, *, progress: bool = False
) -> PixelDetections:
    """Write ``spec`` as a tiled, deflate-compressed GeoTIFF; return its ground truth.

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written scene behind under the final name.
    """
    truth, colours = plan_objects(spec)
    tmp = f"{os.fspath(path)}.partial"
    profile = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": spec.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "BIGTIFF": "IF_SAFER",
        "photometric": "RGB",
        "nodata": 0 if spec.nodata else None,
    }
    try:
        with (
            rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024),
            rasterio.open(tmp, "w", **profile) as dst,
        ):
            _write_strips(dst, spec, truth, colours, progress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return truth
