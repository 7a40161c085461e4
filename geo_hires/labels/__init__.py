"""Labels stage: ground truth and predictions read from common formats."""

from geo_hires.labels.read import LabelSet, labels_for, read_labels

__all__ = ["LabelSet", "labels_for", "read_labels"]
