"""The ``labelme`` layout for the single-face detector: images with their face box, and their dataset.

The dataset serves ``(image, {"label", "box"})`` samples.

Layout (the README's "Data layouts"): ``root/<image>`` + ``root/<image stem>.json`` (LabelMe 5, one
``rectangle`` shape per face). An image without a JSON file, or whose JSON has no shape, is an
image without a face (a negative). More than one face per image is an error: this detector finds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from facetorch.data.annotations import Box, FaceAnnotation, scan_labelme_folder, scan_voc_folder
from facetorch.data.box_transforms import BoxTransform
from facetorch.data.datasets import FaceImageDataset, SampleIndex

__all__ = ["DETECTION_CLASSES", "BoxIndex", "FaceBoxDataset", "index_annotations", "scan_labelme_index", "scan_voc_index"]

DETECTION_CLASSES = ("no_face", "face")  # label 1 = the image holds a face


@dataclass
class BoxIndex(SampleIndex):
    """A :class:`SampleIndex` whose samples also carry their face box (``None`` for no face).

    ``labels`` are 1 for an image with a face and 0 without, so the seeded stratified split keeps
    the share of negatives in every split. ``boxes`` are pixel ``(x1, y1, x2, y2)`` and ``sizes``
    the images' ``(width, height)``.
    """

    boxes: list[Optional[Box]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not len(self.boxes) == len(self.sizes) == len(self.sources):
            raise ValueError(
                f"Expected one box (or None) and one (width, height) per source, got {len(self.sources)} sources, "
                f"{len(self.boxes)} boxes and {len(self.sizes)} sizes"
            )

    def normalized_boxes(self) -> np.ndarray:
        """(N, 4) boxes as fractions of each image's width and height; zeros for no face."""
        out = np.zeros((len(self), 4))
        for i, (box, (width, height)) in enumerate(zip(self.boxes, self.sizes)):
            if box is not None:
                out[i] = np.asarray(box) / [width, height, width, height]
        return out

    def subset(self, indices: Sequence[int]) -> BoxIndex:
        """The samples at ``indices``, boxes included."""
        return BoxIndex(
            [self.sources[i] for i in indices], [self.labels[i] for i in indices], self.class_names, self.root,
            boxes=[self.boxes[i] for i in indices], sizes=[self.sizes[i] for i in indices],
        )


def index_annotations(annotations: Sequence[FaceAnnotation], root: str | Path) -> BoxIndex:
    """A :class:`BoxIndex` from read annotations (at most one face each)."""
    boxes = [a.boxes[0] if a.boxes else None for a in annotations]
    return BoxIndex(
        [a.image_path for a in annotations], [int(b is not None) for b in boxes], list(DETECTION_CLASSES), str(root),
        boxes=boxes, sizes=[(a.width, a.height) for a in annotations],
    )


def _require_images(index: BoxIndex, root: Path, what: str) -> BoxIndex:
    if len(index) == 0:
        raise ValueError(f"{what} {str(root)!r} holds no image (expected images with LabelMe .json files beside them)")
    return index


def scan_labelme_index(root: str | Path) -> BoxIndex:
    """Index a ``labelme`` folder: every image directly in ``root`` with ``<stem>.json`` beside it.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        AnnotationError: a bad JSON file (the message names it), or more than one face in an image.
        ValueError: the folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root (layout labelme) {str(root)!r} is not a folder")
    return _require_images(index_annotations(scan_labelme_folder(root, max_faces=1), root), root, "data.root (layout labelme)")


def scan_voc_index(xml_dir: str | Path, images_dir: str | Path | None = None) -> BoxIndex:
    """Index Pascal VOC annotations of the same kind of samples (the second reader)."""
    annotations = scan_voc_folder(Path(xml_dir), images_dir=Path(images_dir) if images_dir else None, max_faces=1)
    return _require_images(index_annotations(annotations, xml_dir), Path(xml_dir), "VOC folder")


class FaceBoxDataset(FaceImageDataset):
    """Images with their face box, read lazily (and optionally kept decoded in a bounded, shared cache).

    Each item is ``(image, target)``: ``image`` a float tensor (C, H, W) and ``target`` a dict with
    ``label`` (float 1.0 for a face, 0.0 without) and ``box`` (4,) ``x1, y1, x2, y2`` normalised to
    [0, 1] of the input (zeros without a face). A batch is ``(images, {"label": (B,), "box": (B, 4)})``.
    """

    def __init__(
        self,
        index: BoxIndex,
        transform: BoxTransform,
        channels: Literal[1, 3] = 3,
        cache: bool = False,
        cache_bytes: Optional[int] = None,
        workers: int = 0,
    ) -> None:
        # Reading and caching are FaceImageDataset's; only the item differs. The cache keeps full decoded
        # photos (the box-aware crop comes per sample, before the resize), in slots sized by each photo's
        # annotated width and height, within cache_bytes.
        super().__init__(index, transform, channels, cache, cache_bytes=cache_bytes, workers=workers)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        box = self.index.boxes[i]
        return self.transform(self.load(i), [box] if box is not None else [])
