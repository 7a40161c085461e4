"""Read a vector file the way every command does.

GDAL's formats go through pyogrio; GeoParquet through geopandas' own reader, because the GDAL
in pyogrio's wheel has no Parquet driver, while ``detect -o x.parquet`` writes one (so a layer
this tool wrote could not be read back by ``diff`` or given as ``--aoi``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from geo_hires.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["read_vector"]


def read_vector(path: str | os.PathLike[str], what: str) -> gpd.GeoDataFrame:
    """The features of ``path``; ``what`` names the file in errors ("the AOI", "-o"…)."""
    import geopandas as gpd  # here, not at import: most runs never need pandas

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} not found; check the path")
    try:
        if p.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(p)
        return gpd.read_file(p, engine="pyogrio", layer=_layer(p, what))
    except Exception as exc:  # pyogrio and pyarrow raise several types for unreadable files
        raise ConfigError(
            f"cannot read {what} {p} ({exc}); give a vector file GDAL reads, or GeoParquet"
        ) from exc


def _layer(path: Path, what: str) -> str | None:
    """The layer to read: ``detections`` where there is one (``detect``'s GeoPackage also
    holds its coverage and counts), else the first, said when there are others (pyogrio's
    own warning told the user to pass a layer, which no command takes)."""
    import pyogrio

    names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    if len(names) < 2:
        return None
    if "detections" in names:
        return "detections"
    warnings.warn(
        f"{what} {path.name} has {len(names)} layers; reading the first, {names[0]!r}",
        stacklevel=3,
    )
    return names[0]
