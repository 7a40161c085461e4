"""CenterNet box coding shared by training (encode) and scanning (decode).

Convention: output cell ``j`` of a stride-``s`` network is centred on input pixel ``s * j``,
whose centre is at continuous coordinate ``s * j + 0.5``. An object centred at ``cx`` belongs to
cell ``round((cx - 0.5) / s)`` and its offset is the remainder, in cells.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

__all__ = ["decode_peaks", "encode_targets", "gaussian_radius"]


def gaussian_radius(w: float, h: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (in cells) within which a shifted box still has IoU >= min_overlap."""
    a1, b1 = 1.0, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def encode_targets(
    boxes: npt.NDArray[np.float64],
    classes: npt.NDArray[np.int64],
    *,
    out_hw: tuple[int, int],
    num_classes: int,
    stride: int,
) -> dict[str, npt.NDArray[np.float32]]:
    """Training targets for one image.

    Args:
        boxes: ``(N, 4)`` xyxy in input pixels.
        classes: ``(N,)`` class indices.
        out_hw: Output map size ``(H, W)`` in cells.
        num_classes: Heatmap channels.
        stride: Output stride.

    Returns:
        ``heat`` ``(C, H, W)`` Gaussian peaks; ``reg`` ``(4, H, W)`` log w, log h, dx, dy at
        centres; ``mask`` ``(H, W)`` 1 where ``reg`` is defined.
    """
    oh, ow = out_hw
    heat = np.zeros((num_classes, oh, ow), np.float32)
    reg = np.zeros((4, oh, ow), np.float32)
    mask = np.zeros((oh, ow), np.float32)
    ys, xs = np.mgrid[0:oh, 0:ow]
    for (x0, y0, x1, y1), c in zip(boxes, classes, strict=True):
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        fx, fy = ((x0 + x1) / 2 - 0.5) / stride, ((y0 + y1) / 2 - 0.5) / stride
        jx, jy = round(fx), round(fy)
        if not (0 <= jx < ow and 0 <= jy < oh):
            continue
        sigma = max(gaussian_radius(w / stride, h / stride), 0.5) * 2 / 6 + 0.2
        g = np.exp(-((xs - jx) ** 2 + (ys - jy) ** 2) / (2 * sigma**2)).astype(np.float32)
        np.maximum(heat[c], g, out=heat[c])
        reg[:, jy, jx] = (math.log(w), math.log(h), fx - jx, fy - jy)
        mask[jy, jx] = 1.0
    return {"heat": heat, "reg": reg, "mask": mask}


def decode_peaks(
    out: torch.Tensor,
    *,
    num_classes: int,
    stride: int,
    origin: tuple[int, int],
    keep: tuple[int, int, int, int],
    threshold: float,
    max_peaks: int = 1000,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Peaks of a region of the output map → boxes in (level) input pixels.

    Args:
        out: ``(C + 4, h, w)`` raw network output over a region of cells.
        num_classes: ``C``.
        stride: Output stride.
        origin: Global ``(row, col)`` cell of ``out[:, 0, 0]``.
        keep: Global cells ``(row0, row1, col0, col1)`` whose peaks are reported (the core);
            the region should extend one cell beyond it where possible so that the 3x3 peak test
            at the core's edge sees the same neighbours as a whole-image decode.
        threshold: Minimum heatmap score.
        max_peaks: Cap on peaks per call (highest scores kept).

    Returns:
        ``boxes (N, 4)`` xyxy, ``scores (N,)``, ``classes (N,)``.
    """
    heat = torch.sigmoid(out[:num_classes])
    peak = heat == F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]
    r0, r1, c0, c1 = (
        keep[0] - origin[0],
        keep[1] - origin[0],
        keep[2] - origin[1],
        keep[3] - origin[1],
    )
    inside = torch.zeros_like(peak)
    inside[:, r0:r1, c0:c1] = True
    cand = peak & inside & (heat >= threshold)
    cls, yy, xx = torch.nonzero(cand, as_tuple=True)
    scores = heat[cls, yy, xx]
    if scores.numel() > max_peaks:
        top = torch.topk(scores, max_peaks).indices
        cls, yy, xx, scores = cls[top], yy[top], xx[top], scores[top]
    lw, lh, dx, dy = (out[num_classes + k, yy, xx] for k in range(4))
    cx = (xx + origin[1] + dx) * stride + 0.5
    cy = (yy + origin[0] + dy) * stride + 0.5
    w, h = torch.exp(lw.clamp(max=8)), torch.exp(lh.clamp(max=8))
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return boxes.double().numpy(), scores.double().numpy(), cls.long().numpy()
