"""Scan stage: shared-overlap block scanning of fully convolutional detectors."""

from geo_hires.scan.blocks import Block, plan_blocks
from geo_hires.scan.scanner import BlockOutput, BlockReader, default_device, scan

__all__ = ["Block", "BlockOutput", "BlockReader", "default_device", "plan_blocks", "scan"]
