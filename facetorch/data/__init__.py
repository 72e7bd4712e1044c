"""Data layer: layouts, splits, transforms and the shared FaceDataModule."""

from facetorch.data.datamodule import FaceDataModule
from facetorch.data.transforms import Augmentation

__all__ = ["Augmentation", "FaceDataModule"]
