"""Windowed and decimated reads that turn scene pixels into model input.

The normalisation rule (documented in the README, tested in ``tests/test_scene.py``):

* Bands: see :attr:`Scene.rgb_bands` — red/green/blue by colour interpretation, else the first
  three non-alpha bands, a single band repeated three times.
* Values: 8-bit data is divided by 255 (imagery keeps its look). Any other dtype is stretched per
  band between the low and high percentiles (``ReadConfig.stretch_percentiles``, default 2–98) of
  its *valid* pixels, computed once per scene from a decimated read of at most
  ``ReadConfig.stats_pixels``, then clipped to ``[0, 1]``.
* Invalid pixels (nodata value, alpha 0, GDAL mask 0, or outside the scene) are 0 in every channel
  and ``False`` in the mask that travels with the pixels.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from types import TracebackType

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.windows import Window

from geo_hires.config import ReadConfig
from geo_hires.errors import SceneReadError, SceneTooLargeError, quiet
from geo_hires.scene.open import Scene, gdal_env
from geo_hires.scene.remote import gdal_error

__all__ = ["SceneReader", "Stretch", "WindowData", "overview_shape"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stretch:
    """Per-channel linear stretch ``(x - low) / (high - low)`` clipped to ``[0, 1]``.

    Attributes:
        low, high: ``(3,)`` float64 values for the R, G, B channels.
    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def apply(self, data: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        """``(3, H, W)`` raw values → ``(3, H, W)`` float32 in ``[0, 1]``."""
        lo = np.asarray(self.low, np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.high, np.float32)[:, None, None] - lo, 1e-6)
        out = data.astype(np.float32)
        if data.dtype == np.uint8 and not lo.any() and (span == 255).all():
            return np.multiply(out, np.float32(1 / 255), out=out)  # already in [0, 1]
        out -= lo
        out /= span
        return np.clip(out, 0.0, 1.0, out=out)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class WindowData:
    """Pixels of one window, normalised, with their validity mask.

    Attributes:
        window: The requested window in level-0 pixels (may extend past the scene edge).
        image: ``(3, H, W)`` float32 in ``[0, 1]``; ``H, W`` are the output size.
        valid: ``(H, W)`` bool, ``False`` for nodata and for padding beyond the scene.
    """

    window: Window
    image: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]

    @property
    def empty(self) -> bool:
        """True when no pixel of the window is valid."""
        return not bool(self.valid.any())


def _gdal_says(exc: BaseException) -> str:
    """GDAL's own words for a failed read, on one line (rasterio wraps them in its cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def overview_shape(scene: Scene, max_pixels: int) -> tuple[int, int]:
    """``(height, width)`` of the largest decimated view of ``scene`` within ``max_pixels``."""
    factor = max(1.0, math.sqrt(scene.pixels / max_pixels))
    return max(1, int(scene.height / factor)), max(1, int(scene.width / factor))


def _inner(window: Window, scene: Scene) -> tuple[int, int, int, int] | None:
    """Intersection of ``window`` with the scene as ``(col0, row0, col1, row1)``, or None."""
    c0, r0 = max(0, int(window.col_off)), max(0, int(window.row_off))
    c1 = min(scene.width, int(window.col_off + window.width))
    r1 = min(scene.height, int(window.row_off + window.height))
    return None if c1 <= c0 or r1 <= r0 else (c0, r0, c1, r1)


Rect = tuple[int, int, int, int]
"""``(col0, row0, col1, row1)``, half-open."""


def _axis_pieces(
    off: int, size: int, lo: int, hi: int, out: int
) -> list[tuple[int, int, int, int]]:
    """One axis of :func:`_pieces` for an integer factor: ``(src0, src1, out0, out1)`` each.

    Output pixel ``i`` covers source ``[off + i*d, off + (i+1)*d)``. Whole pixels are read as
    one decimated piece; a pixel the scene edge cuts is read on its own, from the source
    pixels that exist, so every output pixel averages exactly its own source pixels wherever
    the window starts or ends.
    """
    d = size // out
    a, b = lo - off, hi - off
    first, last = a // d, (b - 1) // d
    if first == last:
        return [(lo, hi, first, first + 1)]
    full0, full1 = -(-a // d), b // d
    pieces = []
    if a % d:
        pieces.append((lo, off + full0 * d, first, first + 1))
    if full1 > full0:
        pieces.append((off + full0 * d, off + full1 * d, full0, full1))
    if b % d:
        pieces.append((off + full1 * d, hi, full1, full1 + 1))
    return pieces


def _pieces(window: Window, inner: Rect, out_hw: tuple[int, int]) -> list[tuple[Rect, Rect]]:
    """Source rectangles of the in-scene part and where each lands in the output.

    Why: a window reaching past the scene edge reads only its in-scene part; rescaling that part
    by rounded sizes would stretch it by a fraction of a pixel, so the same level pixel would
    get different values from a whole-level read and from a block read. With an integer factor
    the part is cut on output-pixel boundaries instead (see :func:`_axis_pieces`); any other
    factor (quicklooks, statistics) is read in one rounded piece.
    """
    oh, ow = out_hw
    wh, ww = int(window.height), int(window.width)
    col_off, row_off = int(window.col_off), int(window.row_off)
    if ww % ow == 0 and wh % oh == 0:
        cols = _axis_pieces(col_off, ww, inner[0], inner[2], ow)
        rows = _axis_pieces(row_off, wh, inner[1], inner[3], oh)
        return [
            ((c0, r0, c1, r1), (x0, y0, x1, y1))
            for (r0, r1, y0, y1) in rows
            for (c0, c1, x0, x1) in cols
        ]
    sx, sy = ow / ww, oh / wh
    y0 = round((inner[1] - row_off) * sy)
    x0 = round((inner[0] - col_off) * sx)
    ih = min(oh - y0, max(1, round((inner[3] - inner[1]) * sy)))
    iw = min(ow - x0, max(1, round((inner[2] - inner[0]) * sx)))
    return [(inner, (x0, y0, x0 + iw, y0 + ih))]


class SceneReader:
    """An open scene: reads windows and decimated views as :class:`WindowData`.

    Use as a context manager; the dataset stays open for the reader's life so that streaming
    many windows does not pay a file open per window. Threads may share a reader: its reads
    take turns (a GDAL dataset read from two threads at once crashes the process); threads
    that should read in parallel each open their own.
    """

    def __init__(self, scene: Scene, *, config: ReadConfig | None = None) -> None:
        self.scene = scene
        self.config = config or ReadConfig()
        self._env: rasterio.Env | None = None
        self._src: rasterio.DatasetReader | None = None
        self._stretch: Stretch | None = None
        self._bands = list(dict.fromkeys(scene.rgb_bands))
        self._channel_of = [self._bands.index(b) for b in scene.rgb_bands]
        self._lock = threading.Lock()

    def __enter__(self) -> SceneReader:
        self._env = gdal_env(self.scene.gdal_path, alone=self.config.alone)
        self._env.__enter__()
        try:
            with quiet(rasterio.errors.NotGeoreferencedWarning):
                self._src = rasterio.open(self.scene.gdal_path, driver=self.config.driver)
        except rasterio.errors.RasterioIOError as exc:
            self._env.__exit__(None, None, None)
            if self.scene.remote:
                raise gdal_error(self.scene.path, self.scene.gdal_path, exc) from None
            raise SceneReadError(f"cannot reopen {self.scene.path}: {exc}") from exc
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._src is not None:
            self._src.close()
        if self._env is not None:
            self._env.__exit__(et, ev, tb)
        self._src = self._env = None

    @property
    def src(self) -> rasterio.DatasetReader:
        if self._src is None:
            raise SceneReadError("SceneReader used outside its 'with' block; open it first")
        return self._src

    def _raw(
        self, inner: tuple[int, int, int, int], out_hw: tuple[int, int]
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
        """Raw ``(3, h, w)`` values and ``(h, w)`` validity of the in-scene part."""
        c0, r0, c1, r1 = inner
        win = Window(c0, r0, c1 - c0, r1 - r0)
        upsampled = out_hw[0] > r1 - r0 or out_hw[1] > c1 - c0
        try:
            with self._lock:
                data, valid = self._locked_read(win, out_hw, upsampled)
            if np.issubdtype(data.dtype, np.floating):  # NaN as nodata, declared or not
                valid &= np.isfinite(data).all(axis=0)
        except (rasterio.errors.RasterioIOError, CPLE_BaseError) as exc:
            if self.scene.remote:  # the storage failed mid-scene (credentials expired, gone)
                raise gdal_error(self.scene.path, self.scene.gdal_path, exc) from None
            raise SceneReadError(
                f"{self.scene.path}: truncated or corrupt tile at columns {c0}-{c1}, rows "
                f"{r0}-{r1} ({_gdal_says(exc)}); re-export or re-send the scene"
            ) from exc
        return data[self._channel_of], valid

    def _locked_read(
        self, win: Window, out_hw: tuple[int, int], upsampled: bool
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
        """The dataset's values and mask for ``win`` (the caller holds the reader's lock)."""
        data = self.src.read(
            self._bands,
            window=win,
            out_shape=(len(self._bands), *out_hw),
            # decimation averages, like training's area resize; a level finer than the scene
            # interpolates (GDAL samples across the window's edge, so a block read and the
            # whole level agree)
            resampling=Resampling.bilinear if upsampled else Resampling.average,
        )
        if self.scene.has_mask:
            return data, self.src.dataset_mask(window=win, out_shape=out_hw) > 0
        return data, np.ones(out_hw, dtype=bool)

    def stretch(self) -> Stretch:
        """The scene's normalisation stretch (computed once, from a decimated read)."""
        if self._stretch is None:
            self._stretch = self._compute_stretch()
        return self._stretch

    def _compute_stretch(self) -> Stretch:
        if self.scene.dtype == "uint8":
            return Stretch(low=(0.0, 0.0, 0.0), high=(255.0, 255.0, 255.0))
        out_hw = self._overview_shape(self.config.stats_pixels)
        data, valid = self._raw((0, 0, self.scene.width, self.scene.height), out_hw)
        lo_p, hi_p = self.config.stretch_percentiles
        lows, highs = [], []
        for band in data:
            vals = band[valid & np.isfinite(band)] if valid.any() else np.zeros(1)
            lo, hi = np.percentile(vals, [lo_p, hi_p]) if vals.size else (0.0, 1.0)
            lows.append(float(lo))
            highs.append(float(max(hi, lo + 1e-6)))
        return Stretch(low=(lows[0], lows[1], lows[2]), high=(highs[0], highs[1], highs[2]))

    def read(self, window: Window, *, out_size: tuple[int, int] | None = None) -> WindowData:
        """Read ``window`` (level-0 px), padded where it leaves the scene.

        Args:
            window: Half-open window in level-0 pixels; may extend beyond the scene.
            out_size: ``(height, width)`` of the output; smaller than the window means a
                decimated read (GDAL uses overviews when present). Default: window size.
        """
        wh, ww = int(window.height), int(window.width)
        oh, ow = out_size or (wh, ww)
        if oh * ow > self.config.max_read_pixels:
            raise SceneTooLargeError(
                f"a read of {ow}x{oh} px exceeds ReadConfig.max_read_pixels "
                f"({self.config.max_read_pixels:,}); use smaller windows or a larger budget"
            )
        image = np.zeros((3, oh, ow), np.float32)
        valid = np.zeros((oh, ow), bool)
        inner = _inner(window, self.scene)
        if inner is None:
            return WindowData(window=window, image=image, valid=valid)
        for (c0, r0, c1, r1), (x0, y0, x1, y1) in _pieces(window, inner, (oh, ow)):
            data, ok = self._raw((c0, r0, c1, r1), (y1 - y0, x1 - x0))
            part = self.stretch().apply(data)
            if not ok.all():  # nodata is 0 to the network (a NaN times 0 would stay NaN)
                part = np.where(ok, part, np.float32(0))
            image[:, y0:y1, x0:x1] = part
            valid[y0:y1, x0:x1] = ok
        return WindowData(window=window, image=image, valid=valid)

    def read_overview(self, max_pixels: int) -> WindowData:
        """The whole scene decimated to at most ``max_pixels``, and to at most
        ``ReadConfig.max_read_pixels`` (quicklooks, validity masks): a view, coarser under a
        tighter read budget rather than an error."""
        out = self._overview_shape(max_pixels)
        return self.read(Window(0, 0, self.scene.width, self.scene.height), out_size=out)

    def _overview_shape(self, max_pixels: int) -> tuple[int, int]:
        """The whole-scene view's shape within ``max_pixels`` and the read budget."""
        return overview_shape(self.scene, min(max_pixels, self.config.max_read_pixels))
