"""Open a scene and describe it as a small frozen value.

Opening reads only the header: size, CRS, affine, bands, nodata/mask flags and overviews. The
pixel budget is enforced here, before a single pixel is decoded, so a header that claims a
terapixel (a decompression bomb or a typo) is refused up front.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp, MaskFlags

from geo_hires.config import ReadConfig
from geo_hires.errors import (
    NoCRSWarning,
    OptionIgnoredWarning,
    SceneNotFoundError,
    SceneReadError,
    SceneTooLargeError,
    StripLayoutWarning,
    UnsupportedBandsError,
    option,
    quiet,
    warn,
)
from geo_hires.scene import objects, remote
from geo_hires.scene.bands import resolve_bands, warn_band_order
from geo_hires.scene.placement import (
    Placement,
    apply_affine,
    from_gcps,
    from_rpcs,
    gsd_at_centre,
)

__all__ = ["SUPPORTED_DTYPES", "Scene", "gdal_env", "open_scene", "resolve_bands"]

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def gdal_env(path: str | None = None, *, alone: bool = False) -> rasterio.Env:
    """The scoped GDAL options every read in geo_hires runs under (and, for a remote ``path``,
    the range-request settings of :func:`geo_hires.scene.remote.gdal_options`, and the
    credentials of :func:`geo_hires.scene.objects.gdal_session` where GDAL cannot find them).

    ``alone``: GDAL looks at no file beside the one it opens (a ``.ovr``, ``.msk`` or world
    file), what a read confined to one driver needs (``ReadConfig.alone``): GDAL opens a
    sidecar with any driver, so a ``scene.tif.ovr`` that is a VRT read any file or URL it named
    into the scene's overviews.

    Why scoped: GDAL options are process-global otherwise; a library must not change its
    host's settings. The cache is bounded so streaming reads keep memory flat; it also holds
    the tiles a block's halo shares with the next row of blocks, so a remote COG's tiles are
    fetched once. rasterio takes an integer ``GDAL_CACHEMAX`` as *bytes*: a bare 256 means 256
    bytes, which makes every decimated read decode each tile once per output row (100x slower).
    """
    sidecars = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"} if alone else {}
    return rasterio.Env(
        session=objects.gdal_session(path),
        GDAL_CACHEMAX=256 * 1024 * 1024,
        GDAL_PAM_ENABLED="NO",
        CPL_LOG_ERRORS="OFF",
        **{**sidecars, **remote.gdal_options(path)},
    )


def _readable(driver: str | None) -> str:
    """What a scene must be, for a message: any raster, or one of the one driver allowed."""
    if driver is None:
        return "a GeoTIFF/COG or another raster GDAL reads"
    return "a GeoTIFF" if driver == "GTiff" else f"a raster of GDAL's {driver} driver"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scene:
    """What geo_hires knows about a raster without reading its pixels.

    Attributes:
        path: Path of the raster file.
        width, height: Size in level-0 pixels.
        count: Number of bands.
        dtype: Numpy dtype name shared by all bands.
        crs_wkt: WKT of the CRS, or ``None`` when the scene is not georeferenced.
        transform: Affine from pixel corners (col, row) to map coordinates.
        nodata: Nodata value, if declared.
        colorinterp: Colour interpretation name per band (``"red"``, ``"gray"``, ``"alpha"``...).
        has_mask: Whether some pixels can be invalid (nodata value, alpha or a mask band).
        gsd_m: Ground sample distance in metres (geodesic for geographic CRSs), ``None``
            without a CRS.
        overviews: Decimation factors of the internal or external overviews of band 1.
        descriptions: Band descriptions (``""`` where a band has none).
        bands: The bands chosen for red, green and blue (``ReadConfig.bands``, resolved), or
            ``None`` to follow the rule of :attr:`rgb_bands`.
        placement: How a scene without a geotransform is placed (GCPs or RPCs; see
            :mod:`geo_hires.scene.placement`); ``transform`` is then the best affine
            approximation. ``None``: the geotransform is exact.
        open_path: What GDAL opens when it is not ``path``: the ``/vsis3/`` or ``/vsicurl/``
            path of a remote scene (``path`` is then its URL without the query string; a signed
            URL's query is kept here only, never shown or written).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: Affine
    nodata: float | None
    colorinterp: tuple[str, ...]
    has_mask: bool
    gsd_m: float | None
    overviews: tuple[int, ...]
    descriptions: tuple[str, ...] = ()
    bands: tuple[int, int, int] | None = None
    placement: Placement | None = None
    open_path: str | None = dataclasses.field(default=None, repr=False)

    @property
    def gdal_path(self) -> str:
        """The path GDAL opens."""
        return self.open_path or self.path

    @property
    def remote(self) -> bool:
        """Whether the scene is read from object storage or a web server."""
        return self.open_path is not None

    @property
    def exact_affine(self) -> bool:
        """Whether ``transform`` places every pixel exactly (no GCP polynomial or RPC)."""
        return self.placement is None or self.placement.is_affine

    def pixel_to_map(
        self, cols: npt.NDArray[np.float64], rows: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Pixel corner coordinates → the scene CRS (through GCPs or RPCs when it has them)."""
        if not self.exact_affine and self.placement is not None:
            return self.placement.to_map(cols, rows)
        xy = apply_affine(self.transform, cols, rows)
        return xy[..., 0], xy[..., 1]

    def map_to_pixel(
        self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scene-CRS coordinates → fractional pixel ``(col, row)``."""
        if not self.exact_affine and self.placement is not None:
            return self.placement.to_pixel(xs, ys)
        cr = apply_affine(~self.transform, xs, ys)
        return cr[..., 0], cr[..., 1]

    @property
    def pixels(self) -> int:
        """Level-0 pixel count ``width * height``."""
        return self.width * self.height

    @property
    def crs(self) -> CRS | None:
        """The CRS as a pyproj object, or ``None``."""
        return None if self.crs_wkt is None else CRS.from_wkt(self.crs_wkt)

    @property
    def rgb_bands(self) -> tuple[int, int, int]:
        """1-based band indexes that become the model's R, G, B channels.

        The rule: the bands chosen with ``ReadConfig.bands`` (``--bands``); else bands
        interpreted as red, green and blue when all three exist; otherwise the first three
        non-alpha bands; a single non-alpha band (grey, panchromatic) is used for all three.
        """
        if self.bands is not None:
            return self.bands
        interp = self.colorinterp
        if all(c in interp for c in ("red", "green", "blue")):
            return (interp.index("red") + 1, interp.index("green") + 1, interp.index("blue") + 1)
        data = [i + 1 for i, c in enumerate(interp) if c != "alpha"]
        if len(data) >= 3:
            return (data[0], data[1], data[2])
        return (data[0], data[0], data[0])


def _curved(placement: Placement | None) -> Placement | None:
    """The placement when it is not an affine (GCP polynomial, RPC), else ``None``."""
    return placement if placement is not None and not placement.is_affine else None


def _placement(
    path: str, src: rasterio.DatasetReader, config: ReadConfig
) -> tuple[CRS | None, Affine, Placement | None]:
    """A scene without a geotransform: placed by its GCPs, else its RPCs, else not at all."""
    gcps, gcp_crs = src.gcps
    if gcps and gcp_crs is not None:
        crs = CRS.from_user_input(gcp_crs.to_wkt())
        affine, placement = from_gcps(gcps, crs, path, config.gcp_max_residual_px)
        return crs, affine, placement
    if src.rpcs is not None:
        placement = from_rpcs(src.rpcs, config.rpc_height_m)
        corners = placement.to_map(
            np.array([0.0, src.width, 0.0]), np.array([0.0, 0.0, src.height])
        )
        (x0, x1, x2), (y0, y1, y2) = corners
        affine = Affine(
            (x1 - x0) / src.width, (x2 - x0) / src.height, x0,
            (y1 - y0) / src.width, (y2 - y0) / src.height, y0,
        )  # fmt: skip
        return CRS.from_epsg(4326), affine, placement
    return None, src.transform, None


def _check_layout(path: str, dtypes: tuple[str, ...], interp: tuple[str, ...]) -> None:
    if len(set(dtypes)) != 1:
        raise UnsupportedBandsError(
            f"{path}: bands have mixed dtypes {sorted(set(dtypes))}; convert to one dtype first"
        )
    if dtypes[0] not in SUPPORTED_DTYPES:
        raise UnsupportedBandsError(
            f"{path}: dtype {dtypes[0]} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}"
        )
    if "palette" in interp:  # its values are colour-table indexes, not brightness
        raise UnsupportedBandsError(
            f"{path}: a paletted image (colour-table indexes, not colours); expand it to RGB "
            "first: gdal_translate -expand rgb IN.tif OUT.tif"
        )
    data_bands = [c for c in interp if c != "alpha"]
    if len(data_bands) == 2:
        raise UnsupportedBandsError(
            f"{path}: 2 data bands is ambiguous (neither grey nor RGB); write 1 band, 3+ bands, "
            "or mark the second band as alpha"
        )
    if not data_bands:
        raise UnsupportedBandsError(f"{path}: every band is alpha; there is no image data")


def _describe(path: str, src: rasterio.DatasetReader, config: ReadConfig) -> Scene:
    if src.width <= 0 or src.height <= 0 or src.count <= 0:
        raise SceneReadError(f"{path}: raster has zero size ({src.width}x{src.height}x{src.count})")
    if src.width * src.height > config.max_scene_pixels:
        raise SceneTooLargeError(
            f"{path}: declares {src.width}x{src.height} = {src.width * src.height:,} pixels, over "
            f"the budget of {config.max_scene_pixels:,}; raise "
            f"{option('--max-pixels', api='ReadConfig.max_scene_pixels')} if the file is genuine"
        )
    interp = tuple(c.name if isinstance(c, ColorInterp) else str(c) for c in src.colorinterp)
    _check_layout(path, tuple(src.dtypes), interp)
    crs = CRS.from_user_input(src.crs.to_wkt()) if src.crs else None
    transform, placement = src.transform, None
    if crs is None or transform.is_identity:  # no geotransform places the pixels
        named = crs is not None
        crs, transform, placement = _placement(path, src, config)
        if crs is None:
            warn(
                f"{path} has a CRS but no geotransform: its pixels are not placed, so results "
                "are in pixel space; add one (gdal_edit.py -a_ullr) to put them on a map"
                if named
                else f"{path} has no CRS: results are in pixel space and cannot be placed on a map",
                NoCRSWarning,
                stacklevel=4,
            )
    if (height := config.rpc_height_m) and (placement is None or placement.method != "rpc"):
        warnings.warn(
            f"{option('--rpc-height', f'{height:g}', api=f'rpc_height={height:g}')}: {path} is "
            "not placed by RPCs; ignored",
            OptionIgnoredWarning,
            stacklevel=4,
        )
    flags = src.mask_flag_enums
    has_mask = src.nodata is not None or any(MaskFlags.all_valid not in f for f in flags)
    desc = tuple(d or "" for d in src.descriptions)
    bands = None if config.bands is None else resolve_bands(config.bands, path, interp, desc)
    scene = Scene(
        path=path,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=src.dtypes[0],
        crs_wkt=crs.to_wkt() if crs else None,
        transform=transform,
        nodata=None if src.nodata is None or np.isnan(src.nodata) else float(src.nodata),
        colorinterp=interp,
        has_mask=has_mask,
        gsd_m=gsd_at_centre(crs, transform, src.width, src.height, _curved(placement)),
        overviews=tuple(src.overviews(1)),
        descriptions=desc,
        bands=bands,
        placement=placement,
    )
    if bands is None:
        warn_band_order(path, interp, scene.rgb_bands)
    return scene


def _warn_strips(path: str, src: rasterio.DatasetReader) -> None:
    block_h, block_w = src.block_shapes[0]
    if block_w >= src.width and block_h < src.height:
        warnings.warn(
            f"{path} is stored in strips of {block_h} rows, not tiles: every window read fetches "
            "whole strips, so the whole file will be read; convert it to a COG "
            "(gdal_translate -of COG) for range reads",
            StripLayoutWarning,
            stacklevel=4,
        )


def open_scene(path: str | os.PathLike[str], *, config: ReadConfig | None = None) -> Scene:
    """Read a raster's header and return its :class:`Scene`.

    Args:
        path: A GeoTIFF/COG or any other GDAL-readable raster file, or its ``s3://`` or
            ``http(s)://`` URL (read with range requests; :mod:`geo_hires.scene.remote`).
        config: Pixel budget and reading options; defaults to ``ReadConfig()``.

    Raises:
        SceneNotFoundError: The path (or object) does not exist.
        SceneReadError: Not a raster, unreadable header, or zero size.
        SceneTooLargeError: Declared size beyond ``config.max_scene_pixels``.
        UnsupportedBandsError: Band layout or dtype cannot become model input.
        ConfigError: ``config.bands`` names a missing band, or fewer than 3 distinct ones.
        StorageError: A remote scene without credentials, access or a reachable endpoint.

    Warns:
        BandOrderWarning: 4+ bands, no colour interpretation and no ``config.bands``.
        StripLayoutWarning: A remote scene stored in strips (it will be read whole).
    """
    config = config or ReadConfig()
    url = remote.Url.parse(path)
    p = url.public if url is not None else str(path)
    if url is not None:
        objects.stat(url)  # a missing key, no credentials or no access: one clear error now
    elif p.startswith("/vsi"):  # GDAL's own file systems (/vsimem/, /vsizip/…): it says
        if not rasterio.shutil.exists(p):
            raise SceneNotFoundError(f"scene not found: {p}; check the path")
    elif not Path(p).exists():
        raise SceneNotFoundError(f"scene not found: {p}; check the path")
    elif Path(p).is_dir():
        raise SceneReadError(f"{p} is a directory; pass a raster file")
    elif not Path(p).is_file():  # GDAL's open of a named pipe waits for a writer, for ever
        raise SceneReadError(f"{p} is not a regular file (a pipe or a device); pass a raster file")
    gdal = url.gdal if url is not None else p
    try:
        with gdal_env(gdal, alone=config.alone):
            with quiet(rasterio.errors.NotGeoreferencedWarning):  # the open warns; NoCRSWarning
                src = rasterio.open(gdal, driver=config.driver)  # says it in our words
            with src:
                if url is None:
                    return _describe(p, src, config)
                _warn_strips(p, src)
                return dataclasses.replace(_describe(p, src, config), open_path=gdal)
    except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError) as exc:
        if url is not None:
            raise remote.gdal_error(p, gdal, exc) from None
        raise SceneReadError(
            f"cannot open {p} as a raster ({exc}); pass {_readable(config.driver)}"
        ) from exc
