"""What a wrong band order costs, and what ``--bands`` gives back, on real validation images.

Each validation image of the shipped model (named in its card) is rewritten as a 4-band uint16
scene in blue, green, red, NIR order without colour interpretation (x257, so the values span
uint16 and the percentile stretch applies, as with real 16-bit products; NIR is the mean of the
visible bands). AP50 is measured on the RGB originals, on the BGRN copies read as they are
(band 1 taken for red, with the BandOrderWarning), and with ``--bands 3,2,1``.

    python bench/band_order.py ../shared/data/aircraft/train ../shared/data/aircraft/annotations.csv
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio

from geo_hires.config import ReadConfig
from geo_hires.errors import BandOrderWarning
from geo_hires.evaluate import evaluate_scenes
from geo_hires.models.card import load_card

BUNDLE = str(Path(__file__).resolve().parents[1] / "geo_hires/models/weights/aircraft_lsn")


def _bgrn_uint16(src_path: Path, dst_path: Path) -> None:
    with rasterio.open(src_path) as src:
        rgb = src.read(indexes=[1, 2, 3]).astype(np.uint16)
        profile = {
            "driver": "GTiff",  # the same file name (labels match by it), GeoTIFF content
            "width": src.width,
            "height": src.height,
            "count": 4,
            "dtype": "uint16",
            "photometric": "MINISBLACK",
            "tiled": True,
            "compress": "deflate",
        }
    nir = rgb.sum(axis=0) // 3
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(np.stack([rgb[2], rgb[1], rgb[0], nir]) * 257)
        dst.colorinterp = [rasterio.enums.ColorInterp.undefined] * 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images")
    ap.add_argument("labels")
    args = ap.parse_args()
    names = load_card(BUNDLE).val_images
    originals = [str(Path(args.images) / n) for n in names]
    work = Path(tempfile.mkdtemp(prefix="bgrn-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # nothing left in /tmp
    copies = []
    for name, path in zip(names, originals, strict=True):
        _bgrn_uint16(Path(path), work / name)
        copies.append(str(work / name))
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BandOrderWarning)
        for label, scenes, cfg in (
            ("rgb_original", originals, None),
            ("bgrn_as_is", copies, None),
            ("bgrn_bands_3_2_1", copies, ReadConfig(bands=(3, 2, 1))),
        ):
            m = evaluate_scenes(BUNDLE, scenes, args.labels, read_config=cfg)
            rows[label] = {k: m[k] for k in ("ap50", "ap50_95", "images")}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
