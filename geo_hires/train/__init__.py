"""Training stage: chips from labelled scenes and CenterNet training of the scanners."""

from geo_hires.train.chips import ChipSampler, LabelledImage, load_labelled, split_by_image
from geo_hires.train.fit import FitConfig, FitReport, centernet_loss, fit

__all__ = [
    "ChipSampler",
    "FitConfig",
    "FitReport",
    "LabelledImage",
    "centernet_loss",
    "fit",
    "load_labelled",
    "split_by_image",
]
