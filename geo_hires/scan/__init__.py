"""Scan stage: shared-overlap block scanning of fully convolutional detectors."""

from geo_hires.scan.blocks import Block, halo_for, plan_blocks
from geo_hires.scan.scanner import (
    BlockOutput,
    BlockReader,
    batch_blocks,
    default_device,
    forward_batch,
    prepare,
    read_ahead,
    scan,
)

__all__ = [
    "Block",
    "BlockOutput",
    "BlockReader",
    "batch_blocks",
    "default_device",
    "forward_batch",
    "halo_for",
    "plan_blocks",
    "prepare",
    "read_ahead",
    "scan",
]
