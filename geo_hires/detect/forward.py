"""The forward pass of a fully convolutional network over a batch of blocks, and read-ahead.

Each block is read with a halo of at least the network's receptive field, so the outputs of its
core are exactly those of one forward pass over the whole level; no window is ever computed
twice beyond the halo, unlike per-window inference which recomputes every overlap. Reads run one
block ahead on a background thread (bounded prefetch), blocks of one shape are batched, and the
network runs on CUDA when it is there.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from copy import deepcopy
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch

from geo_hires.detect.blocks import Block
from geo_hires.detect.options import Precision
from geo_hires.models.fcn import FCNDetector

__all__ = [
    "BlockOutput",
    "Item",
    "default_device",
    "forward_batch",
    "network_output",
    "prepare",
    "read_ahead",
    "to_device",
]

Item = tuple[Block, npt.NDArray[np.float32], npt.NDArray[np.bool_]]
"""A block's input: the block, its ``(3, h, w)`` float32 image and ``(h, w)`` validity."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class BlockOutput:
    """Network output kept for one block.

    Attributes:
        block: The block.
        out: ``(C + 4, h, w)`` float32 output over the core's cells plus a one-cell margin
            (clipped to the block), on the CPU.
        origin: Global ``(row, col)`` cell of ``out[:, 0, 0]``.
        keep: Global cells ``(row0, row1, col0, col1)`` of the core.
        valid: ``(H, W)`` input validity of the whole block (level pixels).
    """

    block: Block
    out: torch.Tensor
    origin: tuple[int, int]
    keep: tuple[int, int, int, int]
    valid: npt.NDArray[np.bool_]


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cells(
    block: Block, stride: int, out_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int, int, int], tuple[slice, slice]]:
    keep = (
        block.cy0 // stride,
        math.ceil(block.cy1 / stride),
        block.cx0 // stride,
        math.ceil(block.cx1 / stride),
    )
    by, bx = block.y0 // stride, block.x0 // stride
    r0, r1 = max(keep[0] - 1, by), min(keep[1] + 1, by + out_hw[0])
    c0, c1 = max(keep[2] - 1, bx), min(keep[3] + 1, bx + out_hw[1])
    return (r0, c0), keep, (slice(r0 - by, r1 - by), slice(c0 - bx, c1 - bx))


def to_device(batch: npt.NDArray[np.float32], device: torch.device) -> torch.Tensor:
    """A host batch on ``device`` in channels-last layout; through pinned memory on CUDA, so
    the copy runs asynchronously with the host's next read."""
    x = torch.from_numpy(batch)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last)


def network_output(model: FCNDetector, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """``model(x)`` in ``precision``, as fp32 on the CPU.

    In bf16 the backbone runs under autocast and the 1x1 head in fp32 on its output: the head
    regresses log box sizes and sub-cell offsets, where bf16's 8-bit mantissa shows as loose
    boxes, and it costs a few percent of the arithmetic.
    """
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                features = model.backbone(x)
            return model.head(features.float()).cpu()
        return model(x).float().cpu()


def forward_batch(
    model: FCNDetector, items: list[Item], device: torch.device, precision: Precision = "fp32"
) -> list[BlockOutput]:
    """One forward pass over same-shape blocks; blocks without valid pixels are left out."""
    items = [it for it in items if it[2].any()]
    if not items:
        return []
    x = to_device(np.stack([im for _, im, _ in items]), device)
    y = network_output(model, x, precision)
    outs = []
    for (block, _, valid), out in zip(items, y, strict=True):
        origin, keep, (rs, cs) = _cells(block, model.stride, (out.shape[1], out.shape[2]))
        outs.append(
            BlockOutput(
                block=block, out=out[:, rs, cs].contiguous(), origin=origin, keep=keep, valid=valid
            )
        )
    return outs


def prepare(
    model: FCNDetector, device: torch.device | None = None
) -> tuple[FCNDetector, torch.device]:
    """A copy of ``model`` on ``device`` (default: CUDA when present) in eval, channels-last
    form: the caller's network (a bundle others may share, on another device) is left as it
    is. The scanning networks are small (0.04 to 0.6 M parameters): a copy per run is free."""
    device = device or default_device()
    copy = deepcopy(model)
    return copy.to(device).eval().to(memory_format=torch.channels_last), device


T = TypeVar("T")
R = TypeVar("R")


def read_ahead(read: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[tuple[T, R]]:
    """Yield ``(item, read(item))`` in order, with up to ``depth`` reads running ahead.

    One background thread does the reads, so I/O and decoding overlap the caller's compute
    while at most ``depth`` results wait in memory (bounded prefetch).
    """
    it = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geo-hires-read") as pool:
        queue: deque[tuple[T, Future[R]]] = deque()
        for item in it:
            queue.append((item, pool.submit(read, item)))
            if len(queue) >= depth:
                break
        while queue:
            item, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read, nxt)))
            yield item, fut.result()
