"""Purely convolutional CenterNet-style detectors whose receptive field is finite and known.

A model is a stack of 3x3 convolutions (each with BatchNorm and ReLU) described by
:class:`LayerSpec` rows, followed by 1x1 heads: a per-class centre heatmap (logits), the box size
(log width, log height in input pixels) and the sub-cell centre offset. There is no global pooling
and no attention, so every output cell depends only on a bounded input neighbourhood — the
receptive field, computed from the layer list by :func:`receptive_field` — which is what lets the
block scanner (``geo_hires.scan``) share overlap computation exactly.

Every downsampling is a stride-2 3x3 convolution with padding 1, so an input of length ``L``
gives ``ceil(L / stride)`` output cells and cell ``j`` is centred on input ``stride * j``; blocks
starting at multiples of the stride therefore line up with a whole-image pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
from torch import nn

__all__ = [
    "HEAD_CHANNELS",
    "ArchSpec",
    "FCNDetector",
    "LayerSpec",
    "fold_batchnorm",
    "lsn_spec",
    "receptive_field",
    "wide_spec",
]

HEAD_CHANNELS = 4  # size (2) + offset (2) after the per-class heatmap


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """One 3x3 convolution: output channels, stride (1 or 2) and dilation."""

    channels: int
    stride: int = 1
    dilation: int = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """A detector architecture: its conv layers and number of classes."""

    name: str
    layers: tuple[LayerSpec, ...]
    num_classes: int = 1
    in_channels: int = 3

    @property
    def stride(self) -> int:
        """Output stride: product of the layer strides."""
        return math.prod(layer.stride for layer in self.layers)


def lsn_spec(num_classes: int = 1) -> ArchSpec:
    """The lightweight scanning network: 6 convs, 16-32 channels, stride 4, RF 127 px.

    After the VGG-720p idea: a stride-2 stem (the cheapest way to cut CPU cost) and dilated
    convolutions to grow the receptive field to the size of a large aircraft without pooling.
    """
    return ArchSpec(
        name="lsn",
        num_classes=num_classes,
        layers=(
            LayerSpec(channels=16, stride=2),
            LayerSpec(channels=24, stride=2),
            LayerSpec(channels=32),
            LayerSpec(channels=32, dilation=2),
            LayerSpec(channels=32, dilation=4),
            LayerSpec(channels=32, dilation=8),
        ),
    )


def wide_spec(num_classes: int = 1) -> ArchSpec:
    """The larger fine-pass detector (~0.5 M parameters), same contract as the LSN."""
    return ArchSpec(
        name="wide",
        num_classes=num_classes,
        layers=(
            LayerSpec(channels=32, stride=2),
            LayerSpec(channels=64),
            LayerSpec(channels=96, stride=2),
            LayerSpec(channels=96),
            LayerSpec(channels=128, dilation=2),
            LayerSpec(channels=128, dilation=4),
            LayerSpec(channels=128, dilation=8),
        ),
    )


def receptive_field(spec: ArchSpec) -> int:
    """Receptive field in input pixels of one output cell, from the layer list.

    Each 3x3 layer widens it by ``2 * dilation * jump`` where ``jump`` is the product of the
    strides before it (1x1 heads add nothing).
    """
    rf, jump = 1, 1
    for layer in spec.layers:
        rf += 2 * layer.dilation * jump
        jump *= layer.stride
    return rf


def _block(cin: int, layer: LayerSpec) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            cin,
            layer.channels,
            3,
            stride=layer.stride,
            padding=layer.dilation,
            dilation=layer.dilation,
            bias=False,
        ),
        nn.BatchNorm2d(layer.channels),
        nn.ReLU(inplace=True),
    )


class FCNDetector(nn.Module):
    """Backbone of 3x3 conv blocks plus 1x1 heads; output ``(B, C + 4, ceil(H/s), ceil(W/s))``.

    Output channels: ``C`` heatmap logits, then ``log w``, ``log h`` (input pixels), then the
    centre offset ``dx, dy`` in output cells.
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        blocks, cin = [], spec.in_channels
        for layer in spec.layers:
            blocks.append(_block(cin, layer))
            cin = layer.channels
        self.backbone = nn.Sequential(*blocks)
        self.head = nn.Conv2d(cin, spec.num_classes + HEAD_CHANNELS, 1)
        with torch.no_grad():  # CenterNet's prior: start with a low heatmap everywhere
            cast(torch.Tensor, self.head.bias)[: spec.num_classes].fill_(-2.19)

    @property
    def stride(self) -> int:
        return self.spec.stride

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def fold_batchnorm(model: FCNDetector) -> FCNDetector:
    """Fold every BatchNorm into its convolution (inference only; returns the same model).

    Why: one op per layer instead of two, and no batch statistics to get wrong at inference.
    """
    model.eval()
    for i, block in enumerate(model.backbone):
        conv, bn = cast(nn.Sequential, block)[0], cast(nn.Sequential, block)[1]
        if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, nn.Conv2d):
            continue
        mean, var = bn.running_mean, bn.running_var
        if mean is None or var is None:  # track_running_stats is always on for our layers
            raise ValueError("cannot fold a BatchNorm without running statistics")
        scale = bn.weight / torch.sqrt(var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            3,
            stride=cast(tuple[int, int], conv.stride),
            padding=cast(tuple[int, int], conv.padding),
            dilation=cast(tuple[int, int], conv.dilation),
            bias=True,
        )
        with torch.no_grad():
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            cast(torch.Tensor, fused.bias).copy_(bn.bias - mean * scale)
        model.backbone[i] = nn.Sequential(fused, nn.ReLU(inplace=True))
    return model
