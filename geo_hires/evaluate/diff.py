"""Change between two dates: which objects persisted, appeared or disappeared.

Two results (any vector format and CRS, such as two ``geo-hires detect`` outputs of scenes
taken on different days, with different CRS and GSD) are moved into one metric CRS (the UTM
zone of their centre) and matched class by class. Objects of at least ``small_m`` (the square
root of their area) match by IoU, as boxes of the same object overlap from one acquisition to
the next; smaller ones (a car is a few pixels) barely overlap after a one-pixel shift, so they
match when their centres lie within ``max_shift_m``. Matching is greedy on the best pairs
first (ties by position), so every object takes part in at most one pair and the result does
not depend on the input order beyond ties.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geo_hires.errors import ConfigError, option

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["CHANGES", "DiffConfig", "change_collection", "diff_layers", "summary"]

CHANGES = ("persisted", "appeared", "disappeared")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffConfig:
    """How objects are matched (see module docstring)."""

    iou: float = 0.3
    small_m: float = 12.0
    max_shift_m: float = 4.0

    def __post_init__(self) -> None:
        if not (0.0 < self.iou <= 1.0 and self.small_m >= 0 and self.max_shift_m > 0):  # NaN too
            raise ConfigError(
                f"diff: {option('--iou')} in (0, 1], {option('--small', api='small_m')} >= 0 and "
                f"{option('--max-shift', api='max_shift_m')} > 0"
            )


def _prepared(frame: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    if frame.crs is None:
        raise ConfigError(
            f"{name} has no CRS (pixel-space results: its scene had none); a change between "
            "dates needs georeferenced results"
        )
    out = frame[frame.geometry.notna() & ~frame.geometry.is_empty].copy()
    if "class" not in out:
        out["class"] = "object"
    out["class"] = out["class"].fillna("object").astype(str)  # a GIS export's empty classes
    if "score" not in out:
        out["score"] = np.nan
    return out.reset_index(drop=True)


def _pairs(
    old: gpd.GeoSeries, new: gpd.GeoSeries, cfg: DiffConfig
) -> list[tuple[float, int, int, float, float]]:
    """Feasible pairs ``(score, i_old, j_new, iou, shift_m)``, best first."""
    tree = shapely.STRtree(old.values)
    hits = tree.query(new.buffer(cfg.max_shift_m).values, predicate="intersects")
    pairs = []
    for j, i in zip(hits[0], hits[1], strict=True):
        a, b = old.values[i], new.values[j]
        inter = a.intersection(b).area
        iou = inter / (a.area + b.area - inter) if inter > 0 else 0.0
        shift = a.centroid.distance(b.centroid)
        if max(np.sqrt(a.area), np.sqrt(b.area)) < cfg.small_m:
            score = 1.0 - shift / cfg.max_shift_m if shift <= cfg.max_shift_m else -1.0
        else:
            score = iou if iou >= cfg.iou else -1.0
        if score >= 0:
            pairs.append((score, int(i), int(j), iou, shift))
    return sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))


def _match(
    old: gpd.GeoSeries, new: gpd.GeoSeries, cfg: DiffConfig
) -> list[tuple[int, int, float, float]]:
    used_old: set[int] = set()
    used_new: set[int] = set()
    matched = []
    for _, i, j, iou, shift in _pairs(old, new, cfg) if len(old) and len(new) else []:
        if i not in used_old and j not in used_new:
            used_old.add(i)
            used_new.add(j)
            matched.append((i, j, iou, shift))
    return matched


def _num(value: Any, decimals: int) -> float | None:
    return None if value is None or value != value else round(float(value), decimals)


def _row(change: str, cls: str, geom: Any, old: Any = None, new: Any = None,
         iou: float | None = None, shift: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "change": change, "class": cls, "score_old": _num(old, 4), "score_new": _num(new, 4),
        "iou": _num(iou, 4), "shift_m": _num(shift, 2), "geometry": geom,
    }  # fmt: skip


def diff_layers(
    old: gpd.GeoDataFrame, new: gpd.GeoDataFrame, config: DiffConfig | None = None
) -> gpd.GeoDataFrame:
    """Every object of ``old`` and ``new`` once, with its ``change`` (:data:`CHANGES`); the
    geometry is the new one for persisted and appeared objects, the old one for disappeared
    ones; in the metric CRS of the comparison."""
    import geopandas as gpd

    cfg = config or DiffConfig()
    old, new = _prepared(old, "OLD"), _prepared(new, "NEW")
    both = gpd.GeoSeries([*old.to_crs(4326).geometry, *new.to_crs(4326).geometry], crs=4326)
    metric = both.estimate_utm_crs() if len(both) else "EPSG:3857"
    old, new = old.to_crs(metric), new.to_crs(metric)
    rows = []
    for cls in sorted(set(old["class"]) | set(new["class"])):
        o, n = old[old["class"] == cls], new[new["class"] == cls]
        matched = _match(o.geometry.reset_index(drop=True), n.geometry.reset_index(drop=True), cfg)
        for i, j, iou, shift in sorted(matched, key=lambda m: m[1]):
            rows.append(_row("persisted", cls, n.geometry.iloc[j], o["score"].iloc[i],
                             n["score"].iloc[j], iou, shift))  # fmt: skip
        seen_new, seen_old = {m[1] for m in matched}, {m[0] for m in matched}
        for j in (j for j in range(len(n)) if j not in seen_new):
            rows.append(_row("appeared", cls, n.geometry.iloc[j], new=n["score"].iloc[j]))
        for i in (i for i in range(len(o)) if i not in seen_old):
            rows.append(_row("disappeared", cls, o.geometry.iloc[i], old=o["score"].iloc[i]))
    columns = ["change", "class", "score_old", "score_new", "iou", "shift_m", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=metric)


def summary(changes: gpd.GeoDataFrame) -> dict[str, dict[str, int]]:
    """Counts per class and change (every change listed, zeros kept), classes sorted."""
    return {
        cls: {c: int(((changes["class"] == cls) & (changes["change"] == c)).sum()) for c in CHANGES}
        for cls in sorted(set(changes["class"]))
    }


def change_collection(changes: gpd.GeoDataFrame, metadata: dict[str, Any]) -> dict[str, Any]:
    """The changes as an RFC 7946 FeatureCollection (WGS84, 8 decimals) with the summary and
    ``metadata`` in its ``geo_hires`` member."""
    import json

    wgs84 = changes.to_crs(4326)
    wgs84["geometry"] = shapely.transform(wgs84.geometry.values, lambda xy: np.round(xy, 8))
    fc = json.loads(wgs84.to_json(drop_id=True, na="null"))
    return {"type": "FeatureCollection", "geo_hires": {**metadata, "summary": summary(changes)},
            "features": fc["features"]}  # fmt: skip
