"""Scan stage: shared-overlap block scanning of fully convolutional detectors."""

from geo_hires.scan.blocks import Block, halo_for, plan_blocks
from geo_hires.scan.scanner import BlockOutput, BlockReader, default_device, scan

__all__ = [
    "Block",
    "BlockOutput",
    "BlockReader",
    "default_device",
    "halo_for",
    "plan_blocks",
    "scan",
]
