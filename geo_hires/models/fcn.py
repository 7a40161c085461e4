"""Purely convolutional CenterNet-style detectors whose receptive field is finite and known.

A model is a stack of 3x3 convolutions (each with BatchNorm and ReLU) described by
:class:`LayerSpec` rows, followed by 1x1 heads: a per-class centre heatmap (logits), the box size
(log width, log height in input pixels) and the sub-cell centre offset. There is no global pooling
and no attention, so every output cell depends only on a bounded input neighbourhood — the
receptive field, computed from the layer list by :func:`receptive_field` — which is what lets the
block planner (:mod:`geo_hires.detect.blocks`) share overlap computation exactly.

Every downsampling is a stride-2 3x3 convolution with padding 1, so an input of length ``L``
gives ``ceil(L / stride)`` output cells and cell ``j`` is centred on input ``stride * j``; blocks
starting at multiples of the stride therefore line up with a whole-image pass.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from geo_hires.models.arch import ArchSpec, LayerSpec, receptive_field

__all__ = ["HEAD_CHANNELS", "FCNDetector", "fold_batchnorm"]

HEAD_CHANNELS = 4  # size (2) + offset (2) after the per-class heatmap


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
