"""The on-disk layouts in one table: how each is scanned, read, and which data options it uses.

:class:`~facetorch.data.FaceDataModule`, the baselines and the tools look a layout up here
instead of branching on its name.

Layouts (the README's "Data layouts"):

- ``face_crops``: ``root/face/<images>``, ``root/non_face/<images>`` (built-in data without a root);
- ``identity_folders``: ``root/<identity>/<images>``;
- ``labelme``: ``root/<image>`` + ``root/<image stem>.json`` (one face box per image, for the detector).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from facetorch.data.box_transforms import BoxAugmentation, build_box_transform
from facetorch.data.datasets import (
    FACE_CROP_CLASSES,
    FaceImageDataset,
    SampleIndex,
    scan_face_crops,
    scan_identity_folders,
)
from facetorch.data.detection import FaceBoxDataset, scan_labelme_index
from facetorch.data.shards import prepared_shape
from facetorch.data.transforms import Augmentation, InputSpec

__all__ = ["LAYOUTS", "LAYOUT_OPTIONS", "Layout", "builtin_face_crops", "check_layout_options", "get_layout"]

Scanner = Callable[[Path, int, Optional[Sequence[str]]], SampleIndex]
"""(folder, min_images_per_class, class_names or None) -> the folder's samples."""
DatasetBuilder = Callable[..., Dataset]
"""(samples, input, augmentation or None for evaluation, cache, cache_bytes=None, workers=0) -> the dataset.

``cache`` turns the image cache on; ``cache_bytes`` is its budget (None: the machine's default) and
``workers`` the loader workers that will share it."""


def builtin_face_crops() -> SampleIndex:
    """scikit-image's ``lfw_subset()``: 100 real faces then 100 non-faces, 25x25 grey, offline."""
    from skimage.data import lfw_subset

    images = lfw_subset()  # (200, 25, 25) float64 in [0, 1]
    labels = [1] * 100 + [0] * 100  # label 1 = face, as in FACE_CROP_CLASSES
    sources = [np.round(image * 255).astype(np.uint8) for image in images]
    return SampleIndex(sources, labels, list(FACE_CROP_CLASSES), "skimage.data.lfw_subset()")


def _image_dataset(
    index: SampleIndex, spec: InputSpec, augmentation: Optional[Augmentation], cache: bool,
    cache_bytes: Optional[int] = None, workers: int = 0,
) -> Dataset:  # fmt: skip
    # The cache keeps prepared images, whose size is the model's input: fixed-size slots.
    return FaceImageDataset(index, spec.finish(augmentation), spec.channels, cache, prepare=spec.prepare,
                            cache_bytes=cache_bytes, prepared_shape=prepared_shape(spec), workers=workers)  # fmt: skip


def _box_dataset(
    index: SampleIndex, spec: InputSpec, augmentation: Optional[BoxAugmentation], cache: bool,
    cache_bytes: Optional[int] = None, workers: int = 0,
) -> Dataset:  # fmt: skip
    # Crops happen per sample before the resize, so the cache keeps full photos, sized by their annotations.
    transform = build_box_transform(spec.image_size, spec.mean, spec.std, augmentation, spec.channels)
    return FaceBoxDataset(index, transform, spec.channels, cache, cache_bytes, workers)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Layout:
    """How one layout is read.

    Attributes:
        name: The ``data.layout`` value.
        scan: Indexes a folder of this layout.
        dataset: Builds the dataset of a split.
        augmentation_option: The data option that holds this layout's training augmentation.
        options: The layout-specific data options (of :data:`LAYOUT_OPTIONS`) this layout uses;
            setting any other one is an error.
        train_folder_marks_split: A ``train/`` folder alone marks a root as already split (the
            layout keeps its images elsewhere than in such a folder); otherwise ``val/`` or
            ``test/`` must be there too, since ``train`` could be a person's name.
        builtin: Samples used when ``data.root`` is not given, if the layout has any.
        shardable: The layout can be written as shards (``tools/prepare_shards.py``) and read back
            through ``data.shards``: its samples are an image and a label.
    """

    name: str
    scan: Scanner
    dataset: DatasetBuilder
    augmentation_option: str
    options: frozenset[str]
    train_folder_marks_split: bool
    builtin: Optional[Callable[[], SampleIndex]] = None
    shardable: bool = False


LAYOUT_OPTIONS: Mapping[str, Any] = {
    # option -> its neutral default; a value other than this (and other than None) means "set"
    "augmentation": Augmentation(),
    "box_augmentation": BoxAugmentation(),
    "center_crop": None,
    "train_batches": "random",
    "split_by": "image",
    "pairs_file": None,
    "min_images_per_class": 1,
    "align": None,
    "align_box": None,
    "align_model": None,
}
# Options of the layouts whose images go through InputSpec.prepare (the labelme detector's do not).
_ALIGNMENT_OPTIONS = frozenset({"align", "align_box", "align_model"})

LAYOUTS: dict[str, Layout] = {
    "face_crops": Layout(
        name="face_crops",
        scan=lambda folder, min_images, class_names: scan_face_crops(folder),
        dataset=_image_dataset,
        augmentation_option="augmentation",
        options=frozenset({"augmentation", "center_crop"}) | _ALIGNMENT_OPTIONS,
        train_folder_marks_split=True,
        builtin=builtin_face_crops,
        shardable=True,
    ),
    "identity_folders": Layout(
        name="identity_folders",
        scan=scan_identity_folders,
        dataset=_image_dataset,
        augmentation_option="augmentation",
        options=frozenset({"augmentation", "center_crop", "train_batches", "split_by", "pairs_file", "min_images_per_class"})
        | _ALIGNMENT_OPTIONS,
        train_folder_marks_split=False,
        shardable=True,
    ),
    "labelme": Layout(
        name="labelme",
        scan=lambda folder, min_images, class_names: scan_labelme_index(folder),
        dataset=_box_dataset,
        augmentation_option="box_augmentation",
        options=frozenset({"box_augmentation"}),
        train_folder_marks_split=True,
    ),
}


def get_layout(name: str) -> Layout:
    """The layout called ``name``.

    Raises:
        ValueError: no such layout.
    """
    if name not in LAYOUTS:
        raise ValueError(f"data.layout must be one of {sorted(LAYOUTS)}, got {name!r}")
    return LAYOUTS[name]


def check_layout_options(layout: Layout, values: Mapping[str, Any]) -> None:
    """Refuse layout-specific options that ``layout`` would ignore.

    Args:
        layout: The data's layout.
        values: The data options as given (``option -> value``).

    Raises:
        ValueError: an option is set that the layout does not use; the message names it.
    """
    for option, neutral in LAYOUT_OPTIONS.items():
        value = values.get(option, neutral)
        if option in layout.options or value is None or value == neutral:
            continue
        users = sorted(name for name, other in LAYOUTS.items() if option in other.options)
        raise ValueError(
            f"data.{option}={value!r} is not used by layout {layout.name!r} (it applies to {', '.join(users)}); "
            f"remove it or set it to {neutral!r}"
        )
