"""Frozen, keyword-only configuration values, one per pipeline stage.

Each config validates itself in ``__post_init__`` so a bad value fails where it is made, with a
message naming the field, instead of deep inside a stage. :func:`config_id` gives a short stable
hash of any set of configs; it goes into output metadata so a result names the exact settings
that produced it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Any

from geo_hires.errors import ConfigError, option

__all__ = [
    "ExportConfig",
    "MergeConfig",
    "ReadConfig",
    "config_id",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadConfig:
    """How scenes are opened and read.

    Attributes:
        max_scene_pixels: Largest declared ``width * height`` accepted at open. Guards against
            decompression bombs and typos (a header claiming 10^12 pixels).
        max_read_pixels: Largest number of pixels any single read may return (a window or a
            decimated overview). No stage ever asks for more, so memory stays bounded.
        stretch_percentiles: Low/high percentiles of the per-band stretch for non-8-bit data.
        stats_pixels: Pixel count of the decimated read used to compute that stretch.
        driver: Open scenes with this GDAL driver only (e.g. ``"GTiff"``), so a file cannot
            pick its own driver by its content (VRT, XML, NetCDF…), and the scene's file
            alone: no sidecar beside it (``.ovr``, ``.msk``, a world file), which GDAL would
            open with any driver. ``None`` lets GDAL choose and use sidecars. The HTTP service
            sets ``"GTiff"``.
        gcp_max_residual_px: A scene placed by GCPs uses the least-squares affine through them
            when its largest residual is at most this many pixels, else GDAL's GCP polynomial.
        rpc_height_m: Height above the ellipsoid at which RPC-placed scenes are projected.
        stac_asset: For STAC items: the asset to scan (default: the visual/RGB one).
        stac_confine: For STAC items: refuse assets outside the item's folder (the service).
        bands: The scene bands that become the model's red, green and blue channels: 1-based
            indexes or names (colour interpretations such as ``"red"``, or band descriptions
            such as ``"B04"``), resolved when the scene is opened. ``None`` follows the rule of
            :attr:`Scene.rgb_bands <geo_hires.scene.Scene.rgb_bands>`.
    """

    max_scene_pixels: int = 50_000_000_000
    max_read_pixels: int = 64_000_000
    stretch_percentiles: tuple[float, float] = (2.0, 98.0)
    stats_pixels: int = 1_000_000
    driver: str | None = None
    bands: tuple[int | str, ...] | None = None
    gcp_max_residual_px: float = 0.5
    rpc_height_m: float = 0.0
    stac_asset: str | None = None
    stac_confine: bool = False

    @property
    def alone(self) -> bool:
        """Whether reads open the scene's file alone, without the sidecars beside it: those
        confined to one ``driver`` (GDAL opens a sidecar with any driver)."""
        return self.driver is not None

    def __post_init__(self) -> None:
        if self.max_scene_pixels <= 0 or self.max_read_pixels <= 0 or self.stats_pixels <= 0:
            raise ConfigError("ReadConfig pixel limits must be positive integers")
        if self.bands is not None and len(self.bands) != 3:
            raise ConfigError(
                f"{option('--bands')} needs 3 bands (red, green, blue) for an RGB model, got "
                f"{len(self.bands)}"
            )
        lo, hi = self.stretch_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(
                "ReadConfig.stretch_percentiles must satisfy 0 <= low < high <= 100, "
                f"got {lo}, {hi}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """Deduplication across window seams and levels.

    Attributes:
        iou_threshold: Class-aware NMS IoU above which the lower-scored box is dropped.
        cell_size: Side (level-0 px) of the grid cells NMS runs in, so work grows with the
            number of boxes rather than its square. Must exceed twice the largest box.
    """

    iou_threshold: float = 0.5
    cell_size: int = 2048

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(
                f"MergeConfig.iou_threshold must be in (0, 1], got {self.iou_threshold}"
            )
        if self.cell_size < 64:
            raise ConfigError("MergeConfig.cell_size must be >= 64")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Vector output.

    Attributes:
        decimals: Decimal places of WGS84 coordinates in GeoJSON (8 ≈ 1 mm at the equator).
        model_name: Goes into each feature's ``model`` property and the metadata.
    """

    decimals: int = 8
    model_name: str = "none"

    def __post_init__(self) -> None:
        if not 5 <= self.decimals <= 12:
            raise ConfigError(f"ExportConfig.decimals must be in [5, 12], got {self.decimals}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def config_id(*configs: object) -> str:
    """Return a 12-hex-digit hash identifying the given configs (order matters).

    Why: output files record it, so two GeoJSONs can be told apart by the settings that made
    them without embedding every field.
    """
    text = json.dumps([_plain(c) for c in configs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
