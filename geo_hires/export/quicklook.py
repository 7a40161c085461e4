"""Quicklook PNG: a decimated view of the scene with the detections drawn on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from geo_hires.config import ReadConfig
from geo_hires.detections import PixelDetections
from geo_hires.export.vector import atomic_write
from geo_hires.scene.open import Scene
from geo_hires.scene.read import SceneReader

__all__ = ["PALETTE", "write_quicklook"]

PALETTE = ((255, 48, 48), (48, 200, 255), (255, 220, 0), (80, 255, 80), (255, 80, 255))


def write_quicklook(
    path: str | os.PathLike[str],
    dets: PixelDetections,
    scene: Scene,
    *,
    max_pixels: int = 4_000_000,
    read_config: ReadConfig | None = None,
) -> tuple[int, int]:
    """Draw ``dets`` over a view of ``scene`` of at most ``max_pixels``; return its (w, h).

    Nodata shows as a dark grey so it is not mistaken for black imagery; oriented boxes are
    drawn as their polygons.
    """
    with SceneReader(scene, config=read_config) as reader:
        view = reader.read_overview(max_pixels)
    rgb = (np.moveaxis(view.image, 0, -1) * 255).astype(np.uint8)
    rgb[~view.valid] = (40, 40, 40)
    img = Image.fromarray(rgb, "RGB")
    sx, sy = img.width / scene.width, img.height / scene.height
    draw = ImageDraw.Draw(img)
    width = max(1, round(min(img.width, img.height) / 400))
    for i, cls in enumerate(dets.classes):
        colour = PALETTE[int(cls) % len(PALETTE)]
        if dets.corners is not None:  # an OBB model's box: its heading is the point of it
            ring = [(float(x) * sx, float(y) * sy) for x, y in dets.corners[i]]
            draw.polygon(ring, outline=colour, width=width)
            continue
        x0, y0, x1, y1 = (float(v) for v in dets.boxes[i] * (sx, sy, sx, sy))
        draw.rectangle([x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)], outline=colour, width=width)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))  # never a half PNG
    return img.width, img.height
