"""On-disk layouts and the dataset that reads their images.

A layout scanner turns a folder into a :class:`SampleIndex` (what each sample is and its label);
:class:`FaceImageDataset` reads and transforms the samples. Layouts (the README's "Data
layouts"; :mod:`facetorch.data.layouts` holds the table of them):

- ``face_crops``: ``root/face/<images>`` and ``root/non_face/<images>``;
- ``identity_folders``: ``root/<identity>/<images>``; loose files beside the folders are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from facetorch.data.cache import ImageCache, default_cache_bytes
from facetorch.data.files import IMAGE_EXTENSIONS, FileList, class_folder_listing, image_names, is_image_file, subfolder_names
from facetorch.data.images import ImageReadError, read_image

FACE_CROP_CLASSES = ("non_face", "face")  # label 1 = face, so the face probability is column 1

ImageSource = Union[Path, np.ndarray]
"""A sample is a file on disk or an image already in memory (H, W) or (H, W, 3), uint8."""


@dataclass
class SampleIndex:
    """The samples of one folder (or built-in source): what to read and the label of each."""

    sources: list[ImageSource]
    labels: list[int]
    class_names: list[str]
    root: str = "<built-in>"
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """What the scan found in the class folders and does not read (sub-folders, non-image files), relative to root."""

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.labels):
            raise ValueError(f"Expected one label per source, got {len(self.sources)} sources and {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, indices: Sequence[int]) -> SampleIndex:
        """The samples at ``indices``, with the same class names."""
        return SampleIndex(take(self.sources, indices), [self.labels[i] for i in indices], self.class_names, self.root)

    def read(self, i: int, channels: Literal[1, 3]) -> np.ndarray:
        """Decode sample ``i`` as uint8 at its own size: (H, W) for 1 channel, (H, W, 3) RGB for 3."""
        source = self.sources[i]
        return to_uint8(source, channels) if isinstance(source, np.ndarray) else read_image(source, channels)

    @property
    def prepared(self) -> bool:
        """Whether :meth:`read` gives images already prepared for the model input (pre-resized shards)."""
        return False


def take(sources: Sequence[ImageSource], indices: Sequence[int]) -> Sequence[ImageSource]:
    """``sources`` at ``indices``: a :class:`FileList` stays one (no list of paths is built)."""
    if isinstance(sources, FileList):
        return sources.take(indices)
    return [sources[i] for i in indices]


def _require_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"{what} {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{what} {str(root)!r} is not a folder")


def scan_face_crops(root: str | Path) -> SampleIndex:
    """Index the ``face_crops`` layout: ``root/face/*`` (label 1) and ``root/non_face/*`` (label 0).

    Raises:
        FileNotFoundError: ``root`` or one of its two class folders is missing.
        ValueError: a class folder holds no image.
    """
    root = Path(root)
    _require_dir(root, "data.root (layout face_crops)")
    relative: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(FACE_CROP_CLASSES):
        folder = root / name
        if not folder.is_dir():
            found = subfolder_names(root)
            raise FileNotFoundError(
                f"Layout face_crops expects folders 'face/' and 'non_face/' in {str(root)!r}; "
                f"{name + '/'!r} is missing (found folders: {found or 'none'})"
            )
        images, not_read = class_folder_listing(folder)
        skipped.extend(f"{name}/{entry}" for entry in not_read)
        if not images:
            raise ValueError(
                f"Class folder {str(folder)!r} holds no image (expected files ending in {sorted(IMAGE_EXTENSIONS)})"
            )
        relative.extend(f"{name}/{image}" for image in images)
        labels.extend([label] * len(images))
    skipped += image_names(root)  # a loose image beside face/ and non_face/ is of neither class
    sources = FileList(root, relative)
    return SampleIndex(sources, labels, list(FACE_CROP_CLASSES), str(root), skipped=skipped)


def scan_identity_folders(root: str | Path, min_images: int = 1, class_names: Sequence[str] | None = None) -> SampleIndex:
    """Index the ``identity_folders`` layout: one sub-folder of images per person.

    Sub-folders with fewer than ``min_images`` images are dropped and counted in ``dropped``.
    Loose files beside the folders (e.g. ORL's README) and non-image files are not read; loose images
    and what is not read inside the folders are listed in ``skipped``.

    Args:
        root: The folder that holds one folder per identity.
        min_images: Minimum number of images an identity needs to be kept.
        class_names: When given (e.g. the training classes), labels follow this order and any
            folder not in it is an error.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no identity is left, or a folder is not among ``class_names``.
    """
    root = Path(root)
    _require_dir(root, "data.root (layout identity_folders)")
    # os.scandir: one directory read per folder, file types from the listing itself (no stat per file)
    listings = {name: class_folder_listing(root / name) for name in subfolder_names(root)}
    per_identity = {name: images for name, (images, _) in listings.items()}
    skipped = [f"{name}/{entry}" for name, (_, not_read) in listings.items() for entry in not_read]
    skipped += image_names(root)  # a loose image beside the person folders belongs to no one
    dropped = {name: len(imgs) for name, imgs in per_identity.items() if len(imgs) < min_images}
    kept = {name: imgs for name, imgs in per_identity.items() if len(imgs) >= min_images}
    if not kept:
        raise ValueError(
            f"No identity folder in {str(root)!r} holds at least {min_images} image(s) "
            f"(found {len(per_identity)} folder(s){': ' + ', '.join(list(per_identity)[:5]) if per_identity else ''})"
        )
    names = list(class_names) if class_names is not None else sorted(kept)
    unknown = sorted(set(kept) - set(names))
    if unknown:
        raise ValueError(
            f"Identity folders {unknown[:10]} in {str(root)!r} are not among the model's {len(names)} classes (the people "
            "it was trained on); an identity model can only be scored on them"
        )
    label_of = {name: i for i, name in enumerate(names)}
    labels: list[int] = []
    for name, imgs in kept.items():
        labels.extend([label_of[name]] * len(imgs))
    sources = FileList(root, (f"{name}/{image}" for name, imgs in kept.items() for image in imgs))
    return SampleIndex(sources, labels, names, str(root), dropped, skipped)


def to_uint8(image: np.ndarray, channels: Literal[1, 3]) -> np.ndarray:
    """An in-memory image as uint8 with the requested channels (floats in [0, 1] are scaled)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if channels == 1 and array.ndim == 3:
        array = np.round(array[..., :3] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    elif channels == 3 and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return array


class FaceImageDataset(Dataset):
    """Images with integer labels, read lazily (and optionally kept in a bounded, shared cache once prepared).

    Each item is ``(image, label)`` with ``image`` a float tensor (C, H, W): the decoded image goes
    through ``prepare`` (the deterministic step, e.g. :meth:`InputSpec.prepare`: crop and resize),
    which is what the cache keeps, then through ``transform`` (augmentation, normalisation).

    The cache (:class:`~facetorch.data.cache.ImageCache`) holds at most ``cache_bytes`` of
    pixels in memory that forked DataLoader workers share; samples beyond the budget are read
    from disk each time. Its slots need each sample's size in advance: ``prepared_shape`` (every
    prepared image has the model's input shape) or the index's recorded photo sizes (the
    ``labelme`` layout caches full photos, its crops come later).

    Args:
        index: The samples.
        transform: Prepared uint8 image -> tensor.
        channels: 1 (greyscale) or 3 (RGB).
        cache: Keep prepared images in memory after their first read.
        prepare: The deterministic step before ``transform``; ``None`` keeps the decoded image.
        cache_bytes: The cache's budget in bytes; ``None``: :func:`~facetorch.data.cache.default_cache_bytes`.
        prepared_shape: The shape every ``prepare`` output has, (H, W) or (H, W, C), which sizes the
            cache's slots; without it (and without recorded photo sizes) the cache is a bounded dict
            private to each process.
        workers: Loader workers that will read this dataset (a budget share for workers that were not forked).
    """

    def __init__(
        self,
        index: SampleIndex,
        transform: Callable[[np.ndarray], torch.Tensor],
        channels: Literal[1, 3] = 1,
        cache: bool = False,
        prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        cache_bytes: Optional[int] = None,
        prepared_shape: Optional[tuple[int, ...]] = None,
        workers: int = 0,
    ) -> None:
        self.index = index
        self.transform = transform
        self.channels = channels
        self.cache = cache
        self.prepare = prepare
        budget = default_cache_bytes() if cache_bytes is None else int(cache_bytes)
        self._cache: Optional[ImageCache] = None
        self._private: Optional[_BoundedCache] = None
        if cache and budget > 0:
            slot_bytes = self._slot_bytes(prepared_shape)
            if slot_bytes is not None:
                self._cache = ImageCache(slot_bytes, budget, private_bytes=budget // max(1, workers))
            else:
                self._private = _BoundedCache(budget // max(1, workers))

    def _slot_bytes(self, prepared_shape: Optional[tuple[int, ...]]) -> Optional[np.ndarray]:
        """Each sample's largest cached size in bytes, if it is known before reading."""
        if prepared_shape is not None and (self.prepare is not None or self.index.prepared):
            return np.full(len(self.index), int(np.prod(prepared_shape)), dtype=np.int64)
        sizes = getattr(self.index, "sizes", None)  # (width, height) of each photo, e.g. from LabelMe JSON
        if self.prepare is None and sizes is not None and len(sizes) == len(self.index):
            area = np.array([int(w) * int(h) for w, h in sizes], dtype=np.int64).reshape(-1)
            return area * self.channels
        return None

    @property
    def cache_info(self) -> dict[str, Any]:
        """What the cache holds: samples with a slot, slots filled, bytes, shared or private."""
        if self._cache is not None:
            return {"samples": len(self.index), "slots": len(self._cache), "filled": self._cache.filled,
                    "bytes": self._cache.nbytes, "shared": self._cache.shared}  # fmt: skip
        if self._private is not None:
            return {"samples": len(self.index), "slots": None, "filled": len(self._private.images),
                    "bytes": self._private.budget, "shared": False}  # fmt: skip
        return {"samples": len(self.index), "slots": 0, "filled": 0, "bytes": 0, "shared": False}

    def __len__(self) -> int:
        return len(self.index)

    def decode(self, i: int) -> np.ndarray:
        """The i-th image as uint8 at its own size, as read (no caching, no preparation)."""
        return self.index.read(i, self.channels)

    def load(self, i: int) -> np.ndarray:
        """The i-th image as uint8 after ``prepare``, before the per-sample transform (cached if asked)."""
        if self._cache is not None:
            cached = self._cache.get(i)
            if cached is not None:
                return cached
        elif self._private is not None and i in self._private.images:
            return self._private.images[i]
        image = self.decode(i)
        if self.prepare is not None and not self.index.prepared:
            image = self.prepare(image)
        if self._cache is not None:
            self._cache.put(i, image)
        elif self._private is not None:
            self._private.put(i, image)
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(i)), self.index.labels[i]


class _BoundedCache:
    """A per-process dict of images that stops growing at ``budget`` bytes (sizes unknown in advance)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.images: dict[int, np.ndarray] = {}

    def put(self, i: int, image: np.ndarray) -> None:
        if self.used + image.nbytes <= self.budget:
            self.images[i] = image
            self.used += image.nbytes


class PredictDataset(Dataset):
    """Every image file in a folder (or one file) for prediction; unreadable files do not crash.

    Items are ``(image, path, error)``: an unreadable file gives a zero image and the error text,
    so a prediction CSV can report it.
    """

    def __init__(
        self,
        source: str | Path,
        transform: Callable[[np.ndarray], torch.Tensor],
        channels: Literal[1, 3],
        image_size: tuple[int, int],
    ) -> None:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"data.predict_dir {str(source)!r} does not exist")
        self.paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if is_image_file(p))
        if not self.paths:
            raise ValueError(f"data.predict_dir {str(source)!r} holds no image (expected {sorted(IMAGE_EXTENSIONS)})")
        self.transform = transform
        self.channels = channels
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        path = self.paths[i]
        try:
            return self.transform(read_image(path, self.channels)), str(path), ""
        except ImageReadError as error:
            return torch.zeros(self.channels, *self.image_size), str(path), str(error)
