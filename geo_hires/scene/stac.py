"""STAC items as scene references (pystac).

Analysts find scenes through STAC catalogues; an item names several assets (visual composite,
single bands, thumbnails, metadata). The asset to scan is ``--asset KEY`` when given, else the
one with the ``visual`` role or key, else the first raster asset whose ``eo:bands`` (or STAC
1.1 ``bands``) include red, green and blue; those common names also choose ``--bands`` when
none is given. Items and assets may be local files or ``s3://`` / ``http(s)://`` URLs (a
relative href is relative to the item, wherever it is); a remote asset is read with range
requests, never downloaded (:mod:`geo_hires.scene.remote`). With ``confine`` (the service), an
asset outside the item's folder (or its bucket prefix) is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from geo_hires.config import ReadConfig
from geo_hires.errors import ConfigError, GeoHiresError, SceneReadError, option
from geo_hires.scene import objects, remote
from geo_hires.scene.open import Scene, open_scene

__all__ = ["StacAsset", "is_stac_item", "open_input", "resolve_item"]

_RASTER_TYPES = ("image/tiff", "image/jp2", "image/png")
"""Media types of raster assets, by prefix (a COG's
``image/tiff; application=geotiff; profile=cloud-optimized`` is a TIFF)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StacAsset:
    """The asset chosen from an item, and the provenance to record.

    Attributes:
        path: The asset's local file or URL.
        item_id, collection, asset_key: Provenance.
        bands: 1-based red, green, blue bands from the asset's band metadata, if it names them.
    """

    path: str
    item_id: str
    collection: str | None
    asset_key: str
    bands: tuple[int, int, int] | None

    def provenance(self) -> dict[str, Any]:
        return {"item": self.item_id, "collection": self.collection, "asset": self.asset_key}


def is_stac_item(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a JSON file holding a STAC item (cheap: extension and two keys); a
    URL by its extension alone (:func:`resolve_item` reads and checks it)."""
    url = remote.Url.parse(path)
    if url is not None:
        return url.name.lower().endswith(".json")
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file() or p.stat().st_size > 50_000_000:
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "stac_version" in doc


def _band_names(asset: Any) -> list[str]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return [
        str(b.get("common_name") or b.get("eo:common_name") or b.get("name") or "").lower()
        for b in bands
        if isinstance(b, dict)
    ]


def _rgb(names: list[str]) -> tuple[int, int, int] | None:
    if all(c in names for c in ("red", "green", "blue")):
        return (names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1)
    return None


def _choose(item: Any, key: str | None) -> tuple[str, Any]:
    assets = item.assets
    if key is not None:
        if key not in assets:
            raise ConfigError(
                f"STAC item {item.id} has no asset {key!r}; its assets: {sorted(assets)}"
            )
        return key, assets[key]
    for k, a in assets.items():
        if k == "visual" or "visual" in (a.roles or []):
            return k, a
    for k, a in assets.items():
        raster = a.media_type is None or a.media_type.startswith(_RASTER_TYPES)
        if raster and _rgb(_band_names(a)):
            return k, a
    raise ConfigError(
        f"STAC item {item.id} has no visual or RGB asset (by roles or eo:bands); name one with "
        f"{option('--asset')} (its assets: {sorted(assets)})"
    )


def _load(path: str | os.PathLike[str]) -> tuple[Any, remote.Url | Path]:
    """The item and where it lies (its URL, or its local path resolved)."""
    import pystac

    url = remote.Url.parse(path)
    try:
        if url is None:
            item_path = Path(path).resolve()
            return pystac.Item.from_file(str(item_path)), item_path
        item = pystac.Item.from_dict(json.loads(objects.read_bytes(url)))
        item.set_self_href(url.public)  # relative asset hrefs resolve against the item's URL
        return item, url
    except GeoHiresError:
        raise
    except Exception as exc:  # pystac raises several types for bad items
        where = url.public if url is not None else path
        raise SceneReadError(f"{where} is not a readable STAC item ({exc})") from exc


def _asset_path(href: str, where: remote.Url | Path, confine: bool, label: str) -> str:
    """The asset's local path or URL; with ``confine``, only below the item's own folder."""
    url = remote.Url.parse(href)
    if url is not None:
        if confine and not (isinstance(where, remote.Url) and url.under(where.folder)):
            raise ConfigError(f"STAC asset {label} lies outside the item's folder")
        return href
    local = Path(href.removeprefix("file://")).resolve()
    if "://" in href and not href.startswith("file://"):
        raise ConfigError(
            f"STAC asset {label} is at {href}: read only from files, s3:// or https://"
        )
    if isinstance(where, remote.Url):  # a remote item naming this machine's files
        raise ConfigError(
            f"STAC asset {label} is at {href}, a local file, but the item is remote "
            f"({where.public}): a remote item's assets are read from its own store only"
        )
    if confine and not (isinstance(where, Path) and local.is_relative_to(where.parent)):
        raise ConfigError(f"STAC asset {label} lies outside the item's folder")
    return str(local)


def resolve_item(
    path: str | os.PathLike[str], *, asset: str | None = None, confine: bool = False
) -> StacAsset:
    """The raster (local file or URL) a STAC item points at (see module docstring)."""
    item, where = _load(path)
    key, chosen = _choose(item, asset)
    href = chosen.get_absolute_href() or chosen.href
    return StacAsset(
        path=_asset_path(href, where, confine, f"{key!r} of {item.id}"),
        item_id=item.id,
        collection=item.collection_id,
        asset_key=key,
        bands=_rgb(_band_names(chosen)),
    )


def open_input(
    path: str | os.PathLike[str], config: ReadConfig | None = None
) -> tuple[Scene, dict[str, Any] | None]:
    """Open a raster, or the asset a STAC item names (bands from its metadata unless
    ``config.bands`` is set); returns the scene and the item's provenance (``None``: a raster).
    """
    config = config or ReadConfig()
    if not is_stac_item(path):
        if config.stac_asset is not None:
            raise ConfigError(
                f"{option('--asset')} applies to STAC items; {remote.public(path)} is not one"
            )
        return open_scene(path, config=config), None
    ref = resolve_item(path, asset=config.stac_asset, confine=config.stac_confine)
    if config.bands is None and ref.bands is not None:
        config = dataclasses.replace(config, bands=ref.bands)
    return open_scene(ref.path, config=config), ref.provenance()
