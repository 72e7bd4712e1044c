"""Data layer: layouts, splits, transforms and the shared FaceDataModule.

``FaceDataModule`` and ``Augmentation`` are imported on first use, so light modules such as
``facetorch.data.annotations`` load without Lightning.
"""

from __future__ import annotations

import os
from typing import Any

# albumentations asks PyPI for a newer version when imported, and LitData whenever it reads or writes
# shards; facetorch never reaches the network (shards in object storage are read through LitData itself).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

__all__ = ["Augmentation", "FaceDataModule"]


def __getattr__(name: str) -> Any:
    if name == "FaceDataModule":
        from facetorch.data.datamodule import FaceDataModule

        return FaceDataModule
    if name == "Augmentation":
        from facetorch.data.transforms import Augmentation

        return Augmentation
    raise AttributeError(f"module 'facetorch.data' has no attribute {name!r}")
