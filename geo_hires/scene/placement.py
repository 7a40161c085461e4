"""How a scene's pixels are placed on the map: an affine, ground control points, or RPCs.

Level-1 products and drone orthos often carry no geotransform but GCPs, and very-high-resolution
satellite products carry RPCs; GDAL knows where those pixels are, so geo_hires must too. The
rule for GCPs: fit an affine by least squares (``rasterio.transform.from_gcps``) and use it when
its largest residual is within ``max_residual_px`` pixels — everything stays a plain affine —
else transform points with GDAL's GCP transformer (a polynomial of the order the GCP count
allows). RPCs go through GDAL's RPC transformer at a stated height above the ellipsoid.
Residuals are reported in metres, in the output's provenance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio.transform
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.control import GroundControlPoint
from rasterio.rpc import RPC

from geo_hires.errors import SceneReadError

__all__ = ["Placement", "apply_affine", "from_gcps", "from_rpcs", "gsd_at_centre", "metres"]

Gcp = tuple[float, float, float, float]  # row, col, x, y
Floats = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Placement:
    """A non-affine placement (GCP polynomial or RPC), or the report of a GCP affine fit.

    Attributes:
        method: ``"gcp-affine"``, ``"gcp-polynomial"`` or ``"rpc"``.
        gcps: The GCPs (row, col, x, y), for the GCP methods.
        rpcs: The RPC coefficients (``rasterio.rpc.RPC.to_dict()``), for ``"rpc"``.
        height_m: Height above the ellipsoid used with RPCs.
        affine_rmse_m, affine_max_m: Residuals of the least-squares affine fit to the GCPs.
    """

    method: str
    gcps: tuple[Gcp, ...] = ()
    rpcs: dict[str, Any] | None = None
    height_m: float = 0.0
    affine_rmse_m: float | None = None
    affine_max_m: float | None = None

    @property
    def is_affine(self) -> bool:
        return self.method == "gcp-affine"

    def _transformer(self) -> Any:
        if self.method == "rpc":
            return rasterio.transform.RPCTransformer(
                RPC(**(self.rpcs or {})), RPC_HEIGHT=self.height_m
            )
        return rasterio.transform.GCPTransformer([_gcp(g) for g in self.gcps])

    def to_map(self, cols: Floats, rows: Floats) -> tuple[Floats, Floats]:
        """Pixel corners ``(col, row)`` → map ``(x, y)`` (any array shape)."""
        cols, rows = np.asarray(cols, float), np.asarray(rows, float)
        if cols.size == 0:
            return cols.copy(), rows.copy()
        with self._transformer() as t:
            xs, ys = t.xy(rows.ravel(), cols.ravel(), offset="ul")
        return np.asarray(xs).reshape(cols.shape), np.asarray(ys).reshape(cols.shape)

    def to_pixel(self, xs: Floats, ys: Floats) -> tuple[Floats, Floats]:
        """Map ``(x, y)`` → fractional pixel ``(col, row)`` (any array shape)."""
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        if xs.size == 0:
            return xs.copy(), ys.copy()
        with self._transformer() as t:
            rows, cols = t.rowcol(xs.ravel(), ys.ravel(), op=lambda v: v)
        return np.asarray(cols, float).reshape(xs.shape), np.asarray(rows, float).reshape(xs.shape)

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.gcps:
            out["gcps"] = len(self.gcps)
            out["affine_rmse_m"] = _round(self.affine_rmse_m)
            out["affine_max_m"] = _round(self.affine_max_m)
        if self.method == "rpc":
            out["rpc_height_m"] = self.height_m
        return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _gcp(g: Gcp) -> GroundControlPoint:
    return GroundControlPoint(row=g[0], col=g[1], x=g[2], y=g[3])


def apply_affine(t: Affine, x: Floats, y: Floats) -> Floats:
    """Apply ``t`` to coordinate arrays of any shape; returns ``(..., 2)``.

    ``Affine @ (x, y)`` does the same but is untyped for arrays; this keeps mypy honest.
    """
    return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=-1)


GRID_TOLERANCE = 0.01
"""How far a projected CRS's grid metres may stray from the ground's before the ground's are
used: UTM and most national grids stay within 0.1 % over their zone (their metres are kept,
exact and unchanged); Web Mercator's grow as 1/cos(latitude) (x1.46 at 47°N, x2.9 at 70°N)."""


def metres(crs: CRS, x0: Floats, y0: Floats, x1: Floats, y1: Floats) -> Floats:
    """Distances on the ground between points of ``crs``: geodesic (WGS84) for geographic
    CRSs; for projected ones, the CRS's linear unit converted to metres, or the geodesic
    distance where the projection's scale differs from 1 by more than :data:`GRID_TOLERANCE`
    (Web Mercator away from the equator, a polar grid far from its pole)."""
    x0, y0, x1, y1 = np.broadcast_arrays(*(np.asarray(v, float) for v in (x0, y0, x1, y1)))
    geod = Geod(ellps="WGS84")
    if crs.is_geographic:
        return np.asarray(geod.inv(x0, y0, x1, y1)[2], float)
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    grid = np.hypot(x1 - x0, y1 - y0) * factor
    to_lonlat = _to_lonlat(crs.to_wkt())
    if to_lonlat is None:  # a local or engineering CRS: its grid is all there is
        return grid
    lon0, lat0 = to_lonlat.transform(x0, y0)
    lon1, lat1 = to_lonlat.transform(x1, y1)
    ground = np.asarray(geod.inv(lon0, lat0, lon1, lat1)[2], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.abs(ground / grid - 1) > GRID_TOLERANCE
    return np.where(off & np.isfinite(ground), ground, grid)


def gsd_at_centre(
    crs: CRS | None,
    transform: Affine,
    width: int,
    height: int,
    to_map: Placement | None = None,
) -> float | None:
    """Metres per pixel at a scene's centre: from the affine's coefficients for projected
    CRSs (exact) unless the projection's scale there strays from 1 by more than
    :data:`GRID_TOLERANCE` (Web Mercator away from the equator); else measured (geodesic)
    between the centre and its neighbours, through ``to_map`` (a GCP polynomial or RPC
    placement) when given. ``None`` without a CRS."""
    if crs is None:
        return None
    cx, cy = width / 2, height / 2
    cols, rows = np.array([cx, cx + 1, cx]), np.array([cy, cy, cy + 1])
    if to_map is not None:
        xs, ys = to_map.to_map(cols, rows)
    else:
        xy = apply_affine(transform, cols, rows)
        xs, ys = xy[..., 0], xy[..., 1]
    measured = float(metres(crs, xs[0], ys[0], xs[1:], ys[1:]).mean())
    if to_map is None and not crs.is_geographic:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        step_x = math.hypot(transform.a, transform.d)
        step_y = math.hypot(transform.b, transform.e)
        grid = float((step_x + step_y) / 2 * factor)
        if abs(measured / grid - 1) <= GRID_TOLERANCE:
            return grid
    return measured


@functools.lru_cache(maxsize=16)
def _to_lonlat(wkt: str) -> Transformer | None:
    """Projected coordinates → longitude, latitude on the CRS's own datum (None: it has none)."""
    crs = CRS.from_wkt(wkt)
    try:
        return Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    except Exception:  # pyproj raises CRSError or ProjError for a CRS without a datum
        return None


def _check_gcps(gcps: Sequence[Gcp], path: str) -> None:
    if len(gcps) < 3:
        raise SceneReadError(
            f"{path}: {len(gcps)} ground control points; at least 3 (not on one line) are needed "
            "to place the scene"
        )
    pts = np.array([(g[1], g[0]) for g in gcps], float)
    centred = pts - pts.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, float(np.abs(centred).max()))) < 2:
        raise SceneReadError(
            f"{path}: its {len(gcps)} ground control points lie on one line; they cannot place "
            "the scene (add GCPs off that line)"
        )


def from_gcps(
    raw: Sequence[GroundControlPoint], crs: CRS, path: str, max_residual_px: float
) -> tuple[Affine, Placement]:
    """Fit an affine to GCPs and decide between it and the GCP polynomial (module docstring)."""
    gcps = tuple((float(g.row), float(g.col), float(g.x), float(g.y)) for g in raw)
    _check_gcps(gcps, path)
    affine = rasterio.transform.from_gcps(list(raw))
    rows, cols, xs, ys = (np.array(v, float) for v in zip(*gcps, strict=True))
    fx = affine.a * cols + affine.b * rows + affine.c
    fy = affine.d * cols + affine.e * rows + affine.f
    err = metres(crs, xs, ys, fx, fy)
    step = metres(crs, *_column_step(affine))
    rmse, worst = float(math.sqrt(np.mean(err**2))), float(err.max())
    fits = worst <= max_residual_px * float(step[0])
    method = "gcp-affine" if fits else "gcp-polynomial"
    return affine, Placement(method=method, gcps=gcps, affine_rmse_m=rmse, affine_max_m=worst)


def _column_step(t: Affine) -> tuple[Floats, Floats, Floats, Floats]:
    """The origin and one column to the right: a pixel's size, to scale residuals."""
    return np.array([t.c]), np.array([t.f]), np.array([t.c + t.a]), np.array([t.f + t.d])


def from_rpcs(rpcs: RPC, height_m: float) -> Placement:
    return Placement(method="rpc", rpcs=dict(rpcs.to_dict()), height_m=float(height_m))
