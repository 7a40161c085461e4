"""Build the bundled demo scene: two validation airport images side by side, georeferenced.

The Airbus images carry no georeferencing; this script places the mosaic at a synthetic spot
(UTM zone 31N, 0.5 m pixels) so the demo exercises the whole map pipeline. The placement is
made up; the pixels and labels are real. Both images are in the shipped model's validation
split, so the demo shows the model on images it never trained on.

    python scripts/make_demo_scene.py ../shared/data/aircraft demo/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from geo_hires.config import ExportConfig
from geo_hires.detections import PixelDetections
from geo_hires.export import write_geojson
from geo_hires.labels import read_labels
from geo_hires.scene import open_scene

IMAGES = ("54b4e42b-3667-4564-b8fa-c23122ca54d5.jpg", "7635d63c-6b97-4c9c-a7dc-27773d42ed4c.jpg")
TRANSFORM = Affine(0.5, 0.0, 600_000.0, 0.0, -0.5, 5_400_000.0)


def main(src: Path, out: Path) -> None:
    tiles = [np.asarray(Image.open(src / "train" / name).convert("RGB")) for name in IMAGES]
    mosaic = np.concatenate(tiles, axis=1).transpose(2, 0, 1)
    out.mkdir(parents=True, exist_ok=True)
    scene_path = out / "airports.tif"
    profile = {
        "driver": "GTiff",
        "width": mosaic.shape[2],
        "height": mosaic.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32631",
        "transform": TRANSFORM,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "jpeg",
        "jpeg_quality": 85,
        "photometric": "YCbCr",
    }
    with rasterio.open(scene_path, "w", **profile) as dst:
        dst.write(mosaic)
        dst.build_overviews([2, 4, 8])
    parts = []
    for k, name in enumerate(IMAGES):
        lab = read_labels(src / "annotations.csv", image=name)
        px = lab.to_pixels(None, class_names=["Airplane", "Truncated_airplane"])
        parts.append(px.shifted(2560 * k, 0))
    truth = PixelDetections.concat(parts)
    names = tuple("Airplane" for _ in truth.class_names)  # one class, as the model predicts
    truth = PixelDetections.build(
        truth.boxes, truth.scores, np.zeros(len(truth), int), class_names=names[:1]
    )
    write_geojson(
        out / "airports_truth.geojson",
        truth,
        open_scene(scene_path),
        config=ExportConfig(model_name="truth"),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
