"""Training chips from labelled scenes: split by image, sampled around objects, augmented.

Scenes are normalised with the same rule as detection (``SceneReader``) and held as uint8 in
memory, so a chip costs a crop and a resize. Each chip is taken at a random scale (log-uniform in
``scale_range``), so one model learns objects across the sizes its YOLT levels will show it;
augmentations are those that make sense from above: the 8 flips/rotations of the square,
brightness and contrast.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from geo_hires.errors import ConfigError, NoCRSWarning, quiet
from geo_hires.labels import labels_for
from geo_hires.scene import SceneReader, open_scene

__all__ = ["ChipSampler", "LabelledImage", "load_labelled", "split_by_image"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class LabelledImage:
    """One labelled scene in memory.

    Attributes:
        name: File name of the scene.
        image: ``(3, H, W)`` uint8 normalised pixels.
        boxes: ``(N, 4)`` float64 xyxy pixel boxes.
        classes: ``(N,)`` int64 indices into the class table.
        corners: ``(N, 4, 2)`` oriented boxes (pixels) for OBB training, else ``None``.
        scale: Pixels here per pixel of the scene file: not 1 where the scene was resampled to
            the training GSD (:func:`load_labelled`).
    """

    name: str
    image: torch.Tensor
    boxes: npt.NDArray[np.float64]
    classes: npt.NDArray[np.int64]
    corners: npt.NDArray[np.float64] | None = None
    scale: float = 1.0


def load_labelled(
    scenes: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str],
    *,
    class_map: Mapping[str, str] | None = None,
    oriented: bool = False,
    gsd_m: float | None = None,
) -> tuple[list[LabelledImage], tuple[str, ...]]:
    """Read scenes and their labels (one file for all, or a folder with one file per scene).

    Args:
        scenes: Scene files.
        labels: A label file holding every scene (selected by file name), or a folder holding
            ``<scene stem>.<ext>`` label files in any format ``read_labels`` knows.
        class_map: Renames classes (e.g. ``Truncated_airplane`` → ``Airplane``).
        oriented: Also keep each object's oriented box (for OBB models).
        gsd_m: Resample scenes whose GSD (known from their CRS) differs from this by more than
            5 % to it, boxes with them, so a model learns objects at the size its levels will
            show them. Scenes without a CRS are taken as they are.

    Returns:
        The images and the sorted class table.
    """
    class_map = dict(class_map or {})
    raw = []
    for path in scenes:
        with quiet(NoCRSWarning):  # training works in pixels; a missing CRS is fine
            scene = open_scene(path)
        lab = labels_for(path, labels).renamed(class_map)
        dets = lab.to_pixels(scene)  # the scene's objects, in its pixels (map labels too)
        names = [dets.class_names[c] for c in dets.classes]
        boxes = dets.boxes
        corners = lab.to_oriented(scene).corners if oriented else None
        f = _resample_factor(scene.gsd_m, gsd_m)
        size = (max(1, round(scene.height * f)), max(1, round(scene.width * f)))
        boxes = boxes * f
        corners = None if corners is None else corners * f
        with SceneReader(scene) as reader:
            px = reader.read(Window(0, 0, scene.width, scene.height), out_size=size)
        image = torch.from_numpy(np.round(px.image * 255).astype(np.uint8))
        raw.append((Path(path).name, image, boxes, corners, names, f))
    table = tuple(sorted({n for *_, names, _f in raw for n in names}))
    if not table:
        raise ConfigError(
            f"the labels ({os.fspath(labels)}) hold no object in these {len(raw)} scenes: a "
            "model of no class cannot be trained; check the label file (and --class-map)"
        )
    twice = sorted(n for n, k in collections.Counter(n for n, *_ in raw).items() if k > 1)
    if twice:
        raise ConfigError(
            f"two scenes are named {twice[0]}: the split and the card name scenes by file "
            "name; give each scene once, under its own name"
        )
    images = [
        LabelledImage(
            name=n,
            image=im,
            boxes=b,
            classes=np.array([table.index(c) for c in cl], np.int64),
            corners=c,
            scale=f,
        )
        for n, im, b, c, cl, f in raw
    ]
    return images, table


def resampled(items: Sequence[LabelledImage]) -> dict[str, float]:
    """The images loaded at the training GSD, not their files', with their scale (for a model
    card: the data's GSDs are part of how a model was trained)."""
    return {i.name: round(i.scale, 4) for i in items if i.scale != 1}


def _resample_factor(scene_gsd: float | None, target: float | None) -> float:
    """Output pixels per scene pixel that bring ``scene_gsd`` to ``target`` (1: leave it)."""
    if not scene_gsd or not target or abs(scene_gsd / target - 1) <= 0.05:
        return 1.0
    return scene_gsd / target


def split_by_image(
    items: Sequence[LabelledImage], *, val_fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Seeded split into (train, validation) by whole image, never by box."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = max(1, round(len(items) * val_fraction)) if val_fraction > 0 else 0
    val = sorted((items[i] for i in order[:n_val]), key=lambda x: x.name)
    train = sorted((items[i] for i in order[n_val:]), key=lambda x: x.name)
    return train, val


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChipSampler:
    """Draws augmented chips with their boxes.

    Attributes:
        chip: Chip side in pixels (a multiple of the network stride).
        scale_range: Log-uniform range of the resampling factor (chip px per scene px).
        positive_fraction: Share of chips centred near a random object.
        min_visible: Boxes cut by the chip edge are kept when this share of their area shows.
    """

    chip: int = 256
    scale_range: tuple[float, float] = (0.35, 1.0)
    positive_fraction: float = 0.7
    min_visible: float = 0.45

    def _window(self, item: LabelledImage, rng: np.random.Generator) -> tuple[int, int, int]:
        lo, hi = self.scale_range
        src = max(8, round(self.chip / math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        _, h, w = item.image.shape
        if len(item.boxes) and rng.random() < self.positive_fraction:
            b = item.boxes[rng.integers(len(item.boxes))]
            cx = (b[0] + b[2]) / 2 + rng.uniform(-0.4, 0.4) * src
            cy = (b[1] + b[3]) / 2 + rng.uniform(-0.4, 0.4) * src
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        return round(cx - src / 2), round(cy - src / 2), src

    def _crop(self, image: torch.Tensor, x0: int, y0: int, src: int) -> torch.Tensor:
        _, h, w = image.shape
        out = torch.zeros((3, src, src), dtype=torch.float32)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + src), min(h, y0 + src)
        if sx1 > sx0 and sy1 > sy0:
            out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = (
                image[:, sy0:sy1, sx0:sx1].float() / 255
            )
        mode = "area" if src > self.chip else "bilinear"
        return F.interpolate(out[None], size=(self.chip, self.chip), mode=mode)[0]

    def _boxes(
        self, item: LabelledImage, x0: int, y0: int, src: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        s = self.chip / src
        b = (item.boxes - np.array([x0, y0, x0, y0])) * s
        c = np.clip(b, 0, self.chip)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        vis = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
        ok = (
            (vis >= self.min_visible * np.maximum(area, 1e-6))
            & (c[:, 2] - c[:, 0] >= 2)
            & (c[:, 3] - c[:, 1] >= 2)
        )
        return c[ok], item.classes[ok]

    def _augment(
        self, img: torch.Tensor, boxes: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> tuple[torch.Tensor, npt.NDArray[np.float64]]:
        s = self.chip
        if rng.random() < 0.5:  # transpose: with the two flips this gives all 8 symmetries
            img, boxes = img.transpose(1, 2), boxes[:, [1, 0, 3, 2]]
        if rng.random() < 0.5:
            img, boxes = (
                img.flip(2),
                np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], 1),
            )
        if rng.random() < 0.5:
            img, boxes = (
                img.flip(1),
                np.stack([boxes[:, 0], s - boxes[:, 3], boxes[:, 2], s - boxes[:, 1]], 1),
            )
        c, b = rng.uniform(0.75, 1.25), rng.uniform(-0.08, 0.08)
        mean = img.mean()
        img = ((img - mean) * c + mean + b).clamp(0, 1)
        return img.contiguous(), boxes.reshape(-1, 4)

    def sample(
        self, item: LabelledImage, rng: np.random.Generator
    ) -> tuple[torch.Tensor, npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """One chip ``(3, chip, chip)`` float32 in [0, 1] with its boxes and classes."""
        x0, y0, src = self._window(item, rng)
        img = self._crop(item.image, x0, y0, src)
        boxes, classes = self._boxes(item, x0, y0, src)
        img, boxes = self._augment(img, boxes, rng)
        return img, boxes, classes
