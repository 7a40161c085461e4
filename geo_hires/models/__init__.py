"""Models: fully convolutional CenterNet-style detectors, box coding, ultralytics models and
the weights registry."""

from geo_hires.models.bundle import Detectors, load_bundle
from geo_hires.models.codec import decode_peaks, encode_targets, gaussian_radius
from geo_hires.models.fcn import (
    HEAD_CHANNELS,
    ArchSpec,
    FCNDetector,
    LayerSpec,
    fold_batchnorm,
    lsn_spec,
    receptive_field,
    wide_spec,
)

__all__ = [
    "HEAD_CHANNELS",
    "ArchSpec",
    "Detectors",
    "FCNDetector",
    "LayerSpec",
    "decode_peaks",
    "encode_targets",
    "fold_batchnorm",
    "gaussian_radius",
    "load_bundle",
    "lsn_spec",
    "receptive_field",
    "wide_spec",
]
