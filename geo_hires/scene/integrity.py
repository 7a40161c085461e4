"""Whether a TIFF's pixel data lies inside its file, in blocks a read can afford, checked
without reading a pixel.

GDAL opens a TIFF from its header and image directories alone, so a file cut after its
directories (an interrupted upload or copy) opens fine and fails only when a read reaches a
missing tile, minutes into a run. Every tile or strip the directories point at must end at or
before the file's last byte: GDAL tells where each one is through the ``BLOCK_OFFSET_x_y`` and
``BLOCK_SIZE_x_y`` items of a band's ``TIFF`` metadata domain, one lookup per block (about 4 µs),
for the full resolution and every internal overview.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Interleaving

from geo_hires.errors import SceneReadError, SceneTooLargeError, quiet
from geo_hires.scene.open import gdal_env

__all__ = ["MAX_BLOCKS", "MAX_BLOCK_BYTES", "BlockEnd", "check_blocks"]

MAX_BLOCKS = 2**21
"""The most blocks one level may have (about 2 s to check here): a 50-gigapixel scene in
160 px tiles. Tiny tiles over a huge extent (a 134-byte sparse TIFF can declare 39 million)
would cost minutes of lookups before a job is even accepted."""

MAX_BLOCK_BYTES = 128 * 1024**2
"""The most bytes one block (a tile or strip, all its bands where they are interleaved) may
decode to: GDAL decodes a whole block to read any pixel of it, in every reader at once. A
1.2 MB upload holding one 20000 x 20000 RGB tile took 1.66 GB to read a 512 px window.
128 MiB is a 7000 x 6000 RGB tile; a COG's are 0.75 MiB. (GDAL reads a file of one huge
strip line by line: its blocks are one row.)"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockEnd:
    """Where one block of a TIFF ends (the byte after its last), and which block it is."""

    end: int
    column: int
    row: int
    band: int
    overview: int | None
    tiled: bool

    def describe(self) -> str:
        kind = "tile" if self.tiled else "strip"
        where = f"column {self.column}, row {self.row}" if self.tiled else f"{self.row}"
        level = f" of overview {self.overview + 1}" if self.overview is not None else ""
        return f"{kind} {where} of band {self.band}{level}"


def _blocks(src: rasterio.DatasetReader, overview: int | None) -> Iterator[BlockEnd]:
    """Every block of ``src`` (one dataset level) with the byte where it ends."""
    bands = [1] if src.interleaving is Interleaving.pixel else list(src.indexes)
    tiled = bool(src.profile.get("tiled"))
    bh, bw = src.block_shapes[0]
    count = len(bands) * -(-src.height // bh) * -(-src.width // bw)
    if count > MAX_BLOCKS:
        raise SceneReadError(
            f"{Path(src.name).name} is cut into {count:,} blocks of {bw} x {bh} px (at most "
            f"{MAX_BLOCKS:,}); write it with larger tiles (gdal_translate -co TILED=YES "
            "-co BLOCKXSIZE=512 -co BLOCKYSIZE=512)"
        )
    for band in bands:
        for row in range(-(-src.height // bh)):
            for col in range(-(-src.width // bw)):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                size = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                if offset is None or size is None:  # a sparse (never written) block
                    continue
                yield BlockEnd(
                    end=int(offset) + int(size), column=col, row=row, band=band,
                    overview=overview, tiled=tiled,
                )  # fmt: skip


MAX_DIRECTORIES = 256
"""The most image directories (full resolution, overviews, masks) a TIFF may hold: a COG of a
50-gigapixel scene has about 30."""


def _check_directories(path: Path, driver: str) -> None:
    """Refuse a TIFF with a block that decodes to over :data:`MAX_BLOCK_BYTES` in any of its
    image directories: the full resolution, each overview and each internal mask (a 0.5 MB file
    held a 12000 x 12000 mask in one tile: 158 MiB for a 512 px read of the image)."""
    for number in range(1, MAX_DIRECTORIES + 1):
        try:
            directory = _opened(Path(f"GTIFF_DIR:{number}:{path}"), driver)
        except rasterio.errors.RasterioIOError:  # past the last one
            return
        with directory as src:
            _check_block_bytes(src, path.name, mask=number > 1 and _is_mask(src))
    raise SceneReadError(
        f"{path.name} holds over {MAX_DIRECTORIES} image directories; write it as a COG"
    )


def _is_mask(src: rasterio.DatasetReader) -> bool:
    """Whether a directory after the first is a mask: GDAL writes them as one 1-bit band."""
    return src.count == 1 and src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "1"


def _check_block_bytes(src: rasterio.DatasetReader, name: str, *, mask: bool) -> None:
    """Refuse a block of ``src`` (one image directory) decoding to over the limit: its bands
    together where they are interleaved by pixel, one band's otherwise."""
    bh, bw = src.block_shapes[0]
    together = src.interleaving is Interleaving.pixel and src.count > 1
    size = bh * bw * (src.count if together else 1)
    size *= max((np.dtype(d).itemsize for d in src.dtypes), default=1)
    if size > MAX_BLOCK_BYTES:
        what = "of its mask" if mask else f"(all {src.count} bands)" if together else "(one band)"
        raise SceneTooLargeError(
            f"{name}: each {bw} x {bh} px block {what} decodes to {size / 1024**2:,.0f} MiB "
            f"(at most {MAX_BLOCK_BYTES // 1024**2} MiB), all of it for any pixel read; write "
            "it in smaller tiles (gdal_translate -co TILED=YES -co BLOCKXSIZE=512 "
            "-co BLOCKYSIZE=512)"
        )


def _levels(path: Path, driver: str) -> Iterator[tuple[rasterio.DatasetReader, int | None]]:
    with _opened(path, driver) as src:
        count = len(src.overviews(1)) if src.count else 0
        yield src, None
    for level in range(count):
        with _opened(path, driver, overview_level=level) as ovr:
            yield ovr, level


def _opened(path: Path, driver: str, **kw: Any) -> rasterio.DatasetReader:
    """The dataset, opened without rasterio's warning that it has no CRS (a check of its
    blocks needs none); the warning is quieted for the open alone, not while the caller
    reads (other threads' quiet blocks wait for it)."""
    with quiet(rasterio.errors.NotGeoreferencedWarning):
        return rasterio.open(path, driver=driver, **kw)


def check_blocks(path: str | os.PathLike[str], *, driver: str = "GTiff") -> None:
    """Refuse a TIFF whose tiles or strips do not all lie inside the file.

    Raises:
        SceneReadError: A block ends past the end of the file (the file is truncated, or its
            directories are corrupt), or the file cannot be opened as a TIFF.
        SceneTooLargeError: A block decodes to more than :data:`MAX_BLOCK_BYTES`.
    """
    size = os.path.getsize(path)
    try:
        with gdal_env(alone=True):  # the file's own overviews: a sidecar's are not sent
            _check_directories(Path(path), driver)
            for src, level in _levels(Path(path), driver):
                past = next((b for b in _blocks(src, level) if b.end > size), None)
                if past is not None:
                    raise SceneReadError(
                        f"{Path(path).name} is truncated or corrupt: its {past.describe()} ends "
                        f"at byte {past.end:,} but the file has {size:,} bytes; send the whole file"
                    )
    except rasterio.errors.RasterioIOError as exc:
        raise SceneReadError(f"{Path(path).name} cannot be opened as a TIFF: {exc}") from exc
