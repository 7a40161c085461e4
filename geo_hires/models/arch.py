"""Architectures of the scanning networks, as plain values (no torch needed to read a card).

A network is a stack of 3x3 convolutions described by :class:`LayerSpec` rows; its output
stride and receptive field follow from the list alone (:func:`receptive_field`), which is what
the block planner needs to share overlap computation exactly.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["ArchSpec", "LayerSpec", "lsn_spec", "receptive_field", "wide_spec"]


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
