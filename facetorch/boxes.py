"""Face boxes: ``(x1, y1, x2, y2)`` in pixels (or fractions of the image), the one place for their helpers.

NumPy for the data side (IoU, growing a box by a margin, cutting it out of an image) and torch for
the model side (corners sorted after a head that may swap them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is handled: this module loads without it (an ONNX deployment)
    from torch import Tensor

__all__ = [
    "Box", "as_boxes", "box_area", "box_iou", "crop_box", "expand_box", "largest_box", "mirrored_boxes", "ordered_boxes",
    "paired_iou",
]  # fmt: skip

Box = tuple[float, float, float, float]


def as_boxes(x: Any, name: str) -> np.ndarray:
    """An (N, 4) float64 array of xyxy boxes, or a ValueError naming the argument."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    boxes = np.asarray(x, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Expected {name} to be an array of shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    return boxes


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (..., 4) xyxy boxes; 0 for an inverted box."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def largest_box(boxes: Any) -> int:
    """Index of the largest of (N, 4) xyxy boxes (N >= 1): the face a single-face reference keeps."""
    return int(np.argmax(box_area(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable (..., 4) xyxy box arrays; 0 where the union is empty."""
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    union = box_area(a) + box_area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(boxes1: Any, boxes2: Any) -> np.ndarray:
    """(N, M) intersection over union of xyxy boxes; 0 where the union is empty."""
    return _iou(as_boxes(boxes1, "boxes1")[:, None, :], as_boxes(boxes2, "boxes2")[None, :, :])


def paired_iou(pred: Any, gt: Any) -> np.ndarray:
    """(N,) IoU of ``pred[i]`` with ``gt[i]``."""
    p, g = as_boxes(pred, "pred"), as_boxes(gt, "gt")
    if len(p) != len(g):
        raise ValueError(f"expected arrays of equal length, got {{'pred': {len(p)}, 'gt': {len(g)}}}")
    return _iou(p, g)


def expand_box(box: Sequence[float], margin: float, width: int, height: int) -> Box:
    """Grow each side of a box by ``margin`` times its width / height, clipped to the image.

    ``margin=0.2`` makes an unclipped box 1.4 times as wide and as high.
    """
    if margin < 0:
        raise ValueError(f"expected margin >= 0 (a fraction of the box size), got {margin}")
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    return (max(x1 - dx, 0.0), max(y1 - dy, 0.0), min(x2 + dx, float(width)), min(y2 + dy, float(height)))


def _pixel_rect(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    # floor / ceil so that no pixel of the box is lost and a sub-pixel box still gives one pixel.
    x1, y1 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
    x2, y2 = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def crop_box(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The pixels of ``image`` (H, W[, C]) inside an ``(x1, y1, x2, y2)`` box, clipped to the image.

    Every pixel the box touches is kept, and a sub-pixel box still gives one pixel.
    """
    x1, y1, x2, y2 = _pixel_rect(box, image.shape[1], image.shape[0])
    return image[y1:y2, x1:x2]


def ordered_boxes(boxes: Tensor) -> Tensor:
    """Boxes (B, 4) with corners sorted, so that ``x1 <= x2`` and ``y1 <= y2`` (a head's swapped outputs still form a box)."""
    import torch

    return torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)


def mirrored_boxes(boxes: Any) -> Any:
    """Boxes (B, 4) of fractions ``x1, y1, x2, y2`` as they lie in the horizontally mirrored image (``x -> 1 - x``).

    Works on torch tensors and NumPy arrays alike; mirroring twice gives the boxes back.
    """
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    parts = (1 - x2, y1, 1 - x1, y2)
    if hasattr(boxes, "detach"):  # a torch tensor
        import torch

        return torch.stack(parts, dim=1)
    return np.stack(parts, axis=1)
