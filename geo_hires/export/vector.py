"""Vector outputs by extension: GeoJSON (WGS84), and GeoPackage, GeoParquet, FlatGeobuf in the
scene's CRS (geopandas + pyogrio / pyarrow).

Why the scene CRS for the binary formats: analysts measuring areas and distances want the
projected CRS the imagery came in; GeoJSON, whose RFC says WGS84, is the copy for the web and
for diffing (byte-identical run to run). Every file is written under a temporary name and
renamed into place, so a crash never leaves half a file where a result is expected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shapely

from geo_hires.config import ExportConfig
from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, quiet
from geo_hires.export.geojson import write_geojson
from geo_hires.export.styles import (
    LayerStyle,
    counts_style,
    coverage_style,
    detections_style,
    write_layer_styles,
)
from geo_hires.georef import to_map
from geo_hires.scene import remote
from geo_hires.scene.open import Scene

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "FORMATS",
    "atomic_write",
    "check_kind",
    "check_outputs",
    "detections_frame",
    "output_kind",
    "write_frame",
    "write_gpkg",
    "write_gpkg_layers",
    "write_output",
]

GPKG_TIME = "1970-01-01T00:00:00.000Z"
"""What GDAL records as a GeoPackage's ``last_change`` (``OGR_CURRENT_DATE``): a fixed time,
so equal runs write equal bytes."""

FORMATS = {
    ".stac.json": "STAC Item describing the other outputs",
    ".geojson": "GeoJSON (WGS84)",
    ".json": "GeoJSON (WGS84)",
    ".gpkg": "GeoPackage (scene CRS)",
    ".parquet": "GeoParquet (scene CRS)",
    ".fgb": "FlatGeobuf (scene CRS)",
}


def output_kind(path: str | os.PathLike[str]) -> str:
    """The key of :data:`FORMATS` a path's name ends with (``""`` for none)."""
    name = Path(path).name.lower()
    return next((ext for ext in FORMATS if name.endswith(ext)), "")


def check_kind(flag: str, path: str | os.PathLike[str] | None, kinds: Sequence[str]) -> None:
    """Refuse a ``path`` given to ``flag`` whose name does not end in one of ``kinds``: a file
    named for another format than the one written confuses every program that opens it."""
    if path is not None and output_kind(path) not in kinds:
        raise ConfigError(
            f"{flag} {os.fspath(path)!r}: name it {' or '.join(kinds)}, the format written there"
        )


def check_outputs(
    paths: Sequence[str | os.PathLike[str]], *, quicklook: str | os.PathLike[str] | None = None
) -> None:
    """Refuse unknown extensions, duplicates and URLs other than ``s3://`` before any work.

    ``quicklook``, the PNG drawn beside the vector files, must be a ``.png`` and none of them:
    it would silently replace the file it shares a name with."""
    seen: set[str] = set()
    named = [(p, False) for p in paths] + ([(quicklook, True)] if quicklook is not None else [])
    for p, png in named:
        url = remote.Url.parse(p)
        if url is not None and url.scheme != "s3":
            raise ConfigError(f"output {url.public}: write to a local path or s3://BUCKET/KEY")
        name = url.key if url is not None else p
        suffix = output_kind(name) or Path(name).suffix.lower()
        if png and suffix != ".png":
            raise ConfigError(f"quicklook {os.fspath(p)!r}: it is written as PNG; name it .png")
        if not png and suffix not in FORMATS:
            raise ConfigError(
                f"output {os.fspath(p)!r}: unknown format {suffix or '(no extension)'}; use "
                + ", ".join(f"{ext} ({name})" for ext, name in FORMATS.items() if ext != ".json")
            )
        key = url.public if url is not None else os.path.abspath(p)
        if key in seen:
            raise ConfigError(f"output {os.fspath(p)!r} is given twice")
        seen.add(key)


def detections_frame(
    dets: PixelDetections, scene: Scene, *, config: ExportConfig | None = None
) -> gpd.GeoDataFrame:
    """Detections as polygons in the scene CRS, in canonical order, with their attributes."""
    import geopandas as gpd  # here, not at import: a GeoJSON-only run never needs pandas

    config = config or ExportConfig()
    dets = dets.canonical_order()
    geo = to_map(dets, scene)
    polygons = shapely.polygons(geo.polygons) if len(geo) else []
    columns: dict[str, Any] = {
        "class": _text([dets.class_names[int(c)] for c in dets.classes]),
        "score": dets.scores.astype(float),
        "level": _text([dets.level_names[int(lv)] for lv in dets.levels]),
        "model": _text([config.model_name] * len(dets)),
    }
    if geo.dimensions is not None:
        for k, name in enumerate(("heading_deg", "length_m", "width_m")):
            columns[name] = geo.dimensions[:, k].astype(float)
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(polygons, crs=scene.crs_wkt))
    frame.attrs[GEOMETRY_TYPE] = "Polygon"
    return frame


GEOMETRY_TYPE = "geo_hires:geometry_type"
"""A frame's ``attrs`` key naming its layer's geometry type: an empty layer has no geometry
to infer it from (GDAL would declare ``GEOMETRY``/Unknown)."""


def _text(values: list[str]) -> Any:
    """A text column; typed when empty, which pandas would make float (REAL in a GeoPackage,
    double in GeoParquet: a run that finds nothing would change the layer's schema)."""
    import pandas as pd

    return values if values else pd.Series([], dtype="string")


def _schema(frame: gpd.GeoDataFrame) -> dict[str, str]:
    """GDAL's ``geometry_type`` for an empty frame whose type is known; else inferred."""
    kind = frame.attrs.get(GEOMETRY_TYPE)
    return {"geometry_type": kind} if kind and frame.empty else {}


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_gpkg(
    path: str | os.PathLike[str],
    dets: PixelDetections,
    scene: Scene,
    *,
    config: ExportConfig | None = None,
    layer: str = "detections",
    coverage: gpd.GeoDataFrame | None = None,
    counts: gpd.GeoDataFrame | None = None,
) -> None:
    """Write ``dets`` as polygons in the scene's own CRS to a GeoPackage layer, the coverage
    and the counts per AOI polygon when given as layers ``coverage`` and ``counts``, and a
    default style for each (:mod:`geo_hires.export.styles`)."""
    frame = detections_frame(dets, scene, config=config)
    layers: list[tuple[str, gpd.GeoDataFrame, LayerStyle]] = [
        (layer, frame, detections_style(dets.class_names, layer))
    ]
    if coverage is not None:
        layers.append(("coverage", coverage, coverage_style()))
    if counts is not None:
        layers.append(("counts", counts, counts_style()))
    atomic_write(Path(path), lambda t: write_gpkg_layers(t, layers))


def write_gpkg_layers(
    path: Path, layers: Sequence[tuple[str, gpd.GeoDataFrame, LayerStyle]]
) -> None:
    """Write each ``(name, frame, style)`` as a layer of a new GeoPackage with its style as
    the layer's default; GDAL's ``OGR_CURRENT_DATE`` is :data:`GPKG_TIME` while it writes (a
    GeoPackage holds no other time), so equal frames give equal bytes. The option is the
    process's, so the caller's value is restored after (a host's own GeoPackages keep their
    dates)."""
    import pyogrio

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIME})
    try:
        for i, (name, frame, _) in enumerate(layers):
            mode = "a" if i else "w"
            with _quiet_without_crs(frame):
                frame.to_file(
                    path, driver="GPKG", layer=name, engine="pyogrio", mode=mode, **_schema(frame)
                )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    write_layer_styles(path, [style for _, _, style in layers], last_change=GPKG_TIME)


def write_output(
    path: str | os.PathLike[str],
    dets: PixelDetections,
    scene: Scene,
    *,
    config: ExportConfig | None = None,
    extra: dict[str, Any] | None = None,
    coverage: gpd.GeoDataFrame | None = None,
    counts: gpd.GeoDataFrame | None = None,
) -> None:
    """Write ``dets`` in the format the extension names (see :data:`FORMATS`); a GeoPackage
    also gets the ``coverage`` and ``counts`` layers when they are given.

    ``extra`` is the provenance GeoJSON carries in its ``geo_hires`` member (the binary
    formats hold the features and their CRS only).
    """
    target = Path(path)
    check_outputs([target])
    suffix = output_kind(target)
    if suffix in (".geojson", ".json"):
        write_geojson(target, dets, scene, config=config, extra=extra)
    elif suffix == ".gpkg":
        write_gpkg(target, dets, scene, config=config, coverage=coverage, counts=counts)
    elif suffix == ".stac.json":
        raise ConfigError(f"{target}: a STAC item describes a run's outputs; run_detect writes it")
    else:
        write_frame(target, detections_frame(dets, scene, config=config), layer="detections")


def write_frame(path: Path, frame: gpd.GeoDataFrame, *, layer: str) -> None:
    """Write one GeoDataFrame atomically in the format ``path``'s extension names: GeoJSON
    in WGS84 (RFC 7946), else GeoParquet, GeoPackage or FlatGeobuf as is; the layer is named
    ``layer`` (GDAL would name it after the temporary file, which a GIS shows)."""
    with _quiet_without_crs(frame):
        _write_frame(path, frame, layer=layer)


@contextlib.contextmanager
def _quiet_without_crs(frame: gpd.GeoDataFrame) -> Iterator[None]:
    """pyogrio's warning that a frame has no CRS: a scene in pixels, said once already (by
    :class:`~geo_hires.errors.NoCRSWarning`); its text, twice more, only added noise. Only
    such a frame's write is in the (process-wide, one-at-a-time) filter block."""
    if frame.crs is not None:
        yield
        return
    with quiet(UserWarning, message="'crs' was not provided"):
        yield


def _write_frame(path: Path, frame: gpd.GeoDataFrame, *, layer: str) -> None:
    suffix = output_kind(path)
    if suffix in (".geojson", ".json"):  # RFC 7946: WGS84; a frame without CRS is pixels,
        # which GDAL's RFC7946 mode would take for degrees and cut at +-180/+-90
        out = frame.to_crs("EPSG:4326") if frame.crs is not None else frame
        rfc = {"RFC7946": "YES"} if frame.crs is not None else {}
        atomic_write(
            path, lambda t: out.to_file(t, driver="GeoJSON", engine="pyogrio", layer=layer, **rfc)
        )
    elif suffix == ".parquet":  # its schema holds the geometry types; pandas would store attrs
        plain = frame.copy()
        plain.attrs = {}
        atomic_write(path, lambda t: plain.to_parquet(t, index=False))
    elif suffix == ".gpkg":
        style = (
            coverage_style(layer)
            if layer == "coverage"
            else detections_style(sorted(set(frame.get("class", []))), layer)
        )
        atomic_write(path, lambda t: write_gpkg_layers(t, [(layer, frame, style)]))
    else:  # FlatGeobuf's spatial index cannot hold a feature without a geometry
        blank = bool((frame.geometry.isna() | frame.geometry.is_empty).any())
        index = {"SPATIAL_INDEX": "NO"} if blank else {}
        atomic_write(
            path,
            lambda t: frame.to_file(
                t, driver="FlatGeobuf", engine="pyogrio", layer=layer, **index, **_schema(frame)
            ),
        )
