"""5-point face alignment as dlib does it: a face box, then 5 landmarks, then a similarity warp to a template.

:func:`align_faces` is what recognition calls with a detector's boxes on a whole photo;
:func:`align_face` does one box. The steps, following dlib's ``get_face_chip_details`` and
``extract_image_chip``:

1. the 5 landmarks in the box (:mod:`facetorch.models.shape_predictor`, dlib's model), rounded to
   whole pixels as dlib's ``full_object_detection`` holds them;
2. the least-squares similarity from dlib's 5-point template (with ``padding`` around it, 0.25 for
   the face network) scaled to the chip, to the landmarks;
3. the chip's corners placed by that transform, and every chip pixel sampled bilinearly from the
   photo (values truncated to integers, black outside the photo). When the face is more than
   twice the chip's size, the photo is first halved with a 5-tap Gaussian until it is not, as
   dlib does with its image pyramid (dlib's pyramid filter is not reproduced bit for bit).

The landmark model is loaded lazily, once per process (:func:`load_shape_predictor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np

from facetorch.models.shape_predictor import ShapePredictor, load_shape_predictor, similarity_transform

__all__ = ["FIVE_POINT_TEMPLATE", "align_face", "align_faces", "chip_transform", "chips_at", "extract_chip", "face_box",
           "landmarks"]

# dlib's 5-point template in a unit square (get_face_chip_details), in the model's point order.
FIVE_POINT_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])  # fmt: skip
DEFAULT_PADDING = 0.25
DEFAULT_SIZE = 150

Box = Sequence[float]


def face_box(fractions: Sequence[float], height: int, width: int) -> np.ndarray:
    """A face box in pixels from fractions ``(x1, y1, x2, y2)`` of an image of ``height`` x ``width``.

    Rounded to whole pixels like a dlib ``rectangle``: (0.272, 0.272, 0.728, 0.728) of a 250x250 LFW
    photo is (68, 68, 182, 182).
    """
    x1, y1, x2, y2 = (float(f) for f in fractions)
    return np.array([round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height)], dtype=np.float64)


def landmarks(image: np.ndarray, boxes: np.ndarray, predictor: Optional[ShapePredictor] = None) -> np.ndarray:
    """The 5 landmarks (N, 5, 2) of each box ``(left, top, right, bottom)`` in pixels, rounded as dlib rounds them."""
    predictor = predictor if predictor is not None else load_shape_predictor()
    points = predictor(image, np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    return np.floor(points + 0.5)


def chip_transform(points: np.ndarray, size: int | tuple[int, int] = DEFAULT_SIZE,
                   padding: float = DEFAULT_PADDING) -> np.ndarray:
    """Where a chip's pixels come from in the photo, for 5 landmarks.

    Args:
        points: (5, 2) landmarks in photo pixels (dlib's point order).
        size: The chip's side, or (rows, cols).
        padding: Space around the template, as a fraction of it (dlib's face network: 0.25).

    Returns:
        The (2, 3) affine map from a chip pixel (x, y, 1) to photo coordinates.
    """
    rows, cols = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if points.shape != (5, 2):
        raise ValueError(f"Expected 5 landmarks (5, 2), got shape {points.shape}")
    template = (padding + FIVE_POINT_TEMPLATE) / (2 * padding + 1) * max(rows, cols)
    m, t = similarity_transform(template, points)
    angle = math.atan2(m[1, 0], m[0, 0])
    scale = math.hypot(m[0, 0], m[1, 0])
    center = m @ np.array([cols / 2.0, rows / 2.0]) + t
    # dlib's centered_drect: a rectangle of cols * scale (rows * scale) pixels, corners 1 pixel in
    half_w, half_h = (cols * scale - 1) / 2, (rows * scale - 1) / 2
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    top_left = center + rotation @ np.array([-half_w, -half_h])
    top_right = center + rotation @ np.array([half_w, -half_h])
    bottom_left = center + rotation @ np.array([-half_w, half_h])
    return np.column_stack([(top_right - top_left) / max(cols - 1, 1), (bottom_left - top_left) / max(rows - 1, 1), top_left])


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """Half the size: a 5-tap Gaussian ([1 4 6 4 1] / 16 each way) then every other pixel."""
    return cv2.pyrDown(image)


def extract_chip(image: np.ndarray, affine: np.ndarray, size: int | tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Sample a chip from ``image`` through ``affine`` (chip pixel -> photo point), as dlib's bilinear chip.

    Values are truncated to integers and points whose 2x2 neighbourhood leaves the photo are black.

    Args:
        image: uint8 (H, W) or (H, W, C).
        affine: (2, 3) from :func:`chip_transform`.
        size: The chip's side, or (rows, cols).

    Returns:
        uint8 (rows, cols) or (rows, cols, C).
    """
    rows, cols = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    affine = np.asarray(affine, dtype=np.float64)
    # dlib's pyramid: while a chip pixel spans more than two photo pixels, halve the photo
    step = max(np.hypot(*affine[:, 0]), np.hypot(*affine[:, 1]))
    while step > 2.0 and min(image.shape[:2]) > 8:
        image = _pyramid_down(image)
        affine = affine / 2.0  # cv2.pyrDown's pixel i sits on the source's pixel 2i
        step /= 2.0
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    px = affine[0, 0] * xs + affine[0, 1] * ys + affine[0, 2]
    py = affine[1, 0] * xs + affine[1, 1] * ys + affine[1, 2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    left, top = np.where(inside, left, 0), np.where(inside, top, 0)
    fx, fy = px - left, py - top
    source = image.astype(np.float64)
    if source.ndim == 3:
        fx, fy, inside = fx[..., None], fy[..., None], inside[..., None]
    right, bottom = np.minimum(left + 1, width - 1), np.minimum(top + 1, height - 1)
    value = (1 - fy) * ((1 - fx) * source[top, left] + fx * source[top, right]) + fy * (
        (1 - fx) * source[bottom, left] + fx * source[bottom, right]
    )
    return np.where(inside, value, 0).astype(np.uint8)  # truncation, as dlib's pixel assignment


def align_faces(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Box],
    size: int = DEFAULT_SIZE,
    padding: float = DEFAULT_PADDING,
    predictor: Optional[ShapePredictor] = None,
) -> list[np.ndarray]:
    """Aligned face chips, one per box, as dlib's face network expects them.

    Args:
        image: The whole photo, uint8 (H, W) grey or (H, W, 3) RGB.
        boxes: (N, 4) face boxes ``(x1, y1, x2, y2)`` in the photo's pixels (a detector's boxes;
            read as dlib's ``rectangle``: left, top, right, bottom). The landmark model expects a
            box of the face's size, as dlib's detectors give.
        size: The chip's side (150 for dlib's face network).
        padding: Space around dlib's template (0.25 for the face network).
        predictor: The landmark model (default: dlib's, loaded once per process).

    Returns:
        One uint8 chip (size, size[, 3]) per box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    return chips_at(image, landmarks(image, boxes, predictor), size, padding)


def chips_at(image: np.ndarray, points: np.ndarray, size: int = DEFAULT_SIZE,
             padding: float = DEFAULT_PADDING) -> list[np.ndarray]:  # fmt: skip
    """The aligned chip of each face whose 5 landmarks (N, 5, 2) are known (what :func:`align_faces` cuts)."""
    return [extract_chip(image, chip_transform(p, size, padding), size) for p in points]


def align_face(
    image: np.ndarray,
    box: Box,
    size: int = DEFAULT_SIZE,
    padding: float = DEFAULT_PADDING,
    predictor: Optional[ShapePredictor] = None,
) -> np.ndarray:
    """One aligned chip for one face box ``(x1, y1, x2, y2)``: see :func:`align_faces`."""
    return align_faces(image, [box], size, padding, predictor)[0]
