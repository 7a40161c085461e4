"""Blocks a read can afford: a TIFF whose tile, strip or mask decodes to more than
``MAX_BLOCK_BYTES`` is refused by ``check_blocks`` before any pixel is read (GDAL decodes a whole
block for any pixel of it, in every reader), whichever directory holds it. Files are sparse
(declared, never written) or written by hand: a few kilobytes each."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
import rasterio

from geo_hires.errors import SceneTooLargeError
from geo_hires.scene.integrity import MAX_BLOCK_BYTES, check_blocks


def _sparse(path: Path, side: int, block: int, count: int, dtype: str, interleave: str) -> Path:
    profile = {"driver": "GTiff", "width": side, "height": side, "count": count, "dtype": dtype,
               "tiled": True, "blockxsize": block, "blockysize": block, "sparse_ok": True,
               "interleave": interleave, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile):
        pass
    return path


@pytest.mark.parametrize(
    ("count", "dtype", "interleave", "block", "refused"),
    [
        (3, "uint8", "pixel", 7008, "block (all 3 bands) decodes to 141 MiB"),
        (3, "uint8", "band", 7008, None),  # a band's block is read alone: 47 MiB
        (1, "uint16", "band", 8208, "block (one band) decodes to 129 MiB"),
        (1, "uint16", "band", 8192, None),  # exactly the limit
    ],
)
def test_a_block_over_the_limit_is_refused_whatever_its_layout(
    tmp_path, count, dtype, interleave, block, refused
):
    path = _sparse(tmp_path / "s.tif", block, block, count, dtype, interleave)
    if refused is None:
        check_blocks(path)
        return
    said = re.escape(f"s.tif: each {block} x {block} px {refused}")
    with pytest.raises(SceneTooLargeError, match=f"^{said}"):
        check_blocks(path)


def _tiff_with_one_tile_mask(path: Path, side: int, tile: int = 256) -> Path:
    """An RGB image in ``tile`` px tiles with an internal 1-bit mask in one ``side`` px tile:
    what no GDAL writes (its masks are tiled as their image) but a hand can (a reviewer's 0.5 MB
    file cost 158 MiB to read a 512 px window of the image)."""
    tiles = -((-side // tile) ** 2)
    image, mask = zlib.compress(bytes(tile * tile * 3)), zlib.compress(bytes(side * side // 8))
    data = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets = [len(data) + i * len(image) for i in range(tiles)]
    data += image * tiles
    mask_at = len(data)
    data += mask

    def directory(entries: list[tuple[int, int, list[int]]]) -> tuple[int, int]:
        start, extra = len(data), bytearray()
        head = struct.pack("<H", len(entries))
        after = start + 2 + 12 * len(entries) + 4
        for tag, kind, values in entries:
            raw = struct.pack("<" + {3: "H", 4: "I"}[kind] * len(values), *values)
            where = raw.ljust(4, b"\0") if len(raw) <= 4 else struct.pack("<I", after + len(extra))
            extra += b"" if len(raw) <= 4 else raw
            head += struct.pack("<HHI", tag, kind, len(values)) + where
        data.extend(head + b"\0\0\0\0" + extra)
        return start, start + len(head)

    first, link = directory([(256, 4, [side]), (257, 4, [side]), (258, 3, [8, 8, 8]),
        (259, 3, [8]), (262, 3, [2]), (277, 3, [3]), (284, 3, [1]), (322, 3, [tile]),
        (323, 3, [tile]), (324, 4, offsets), (325, 4, [len(image)] * tiles)])  # fmt: skip
    second, _ = directory([(254, 4, [4]), (256, 4, [side]), (257, 4, [side]), (258, 3, [1]),
        (259, 3, [8]), (262, 3, [4]), (277, 3, [1]), (284, 3, [1]), (322, 3, [side]),
        (323, 3, [side]), (324, 4, [mask_at]), (325, 4, [len(mask)])])  # fmt: skip
    struct.pack_into("<I", data, 4, first)
    struct.pack_into("<I", data, link, second)
    path.write_bytes(bytes(data))
    return path


def test_a_mask_in_one_huge_tile_is_refused_though_the_image_is_tiled(tmp_path):
    """The image's own blocks are 192 KiB: only the mask's directory gives it away."""
    side = 12000
    assert side * side > MAX_BLOCK_BYTES
    path = _tiff_with_one_tile_mask(tmp_path / "m.tif", side)
    assert path.stat().st_size < 1_000_000
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (256, 256) and src.count == 3  # the image: fine
    with pytest.raises(SceneTooLargeError, match=r"12000 x 12000 px block of its mask decodes"):
        check_blocks(path)
    check_blocks(_tiff_with_one_tile_mask(tmp_path / "ok.tif", 2048))  # a mask that fits
