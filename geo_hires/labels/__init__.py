"""Labels stage: ground truth and predictions read from common formats."""

from geo_hires.labels.read import LabelSet, read_labels

__all__ = ["LabelSet", "read_labels"]
