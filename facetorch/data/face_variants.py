"""More face crops from the faces at hand: jittered copies of hand-boxed faces and drawn face masks.

A face / non-face model trained on a thousand LFW faces and a hundred hand-boxed photos learns the
LFW face: on hand-boxed photos of other people (close-up, dark, masked) it misses faces. Two cheap
fixes, used by ``prepare_crops.py --face_copies N --synthetic_masks P``:

- :func:`jittered_boxes`: a hand-boxed face cut again with its box scaled and shifted a little,
  so the few faces like the ones to be recognised weigh more, at the tightness hand boxes vary by;
- :func:`draw_mask`: a surgical / cloth mask drawn over nose, mouth and chin of a face crop (in
  the manner of MaskTheFace, without landmarks: the crop's hand-box shape places the mask).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facetorch.boxes import Box, crop_box
from facetorch.data.annotations import FaceAnnotation

__all__ = ["MASK_COLOURS", "FaceExtras", "draw_mask", "jittered_boxes"]

JITTER_SCALE = (0.9, 1.15)  # box size factor
JITTER_SHIFT = 0.06  # largest centre shift, fraction of the box size
# Grey values of common masks: white / light blue surgical, grey, black cloth (BGR via grey + tint).
MASK_COLOURS = ((235, 235, 235), (215, 190, 150), (160, 160, 160), (40, 40, 40), (25, 25, 30), (190, 200, 130))


def jittered_boxes(box: Sequence[float], count: int, width: int, height: int, rng: np.random.Generator) -> list[Box]:
    """``count`` copies of ``box`` scaled by 0.9 to 1.15 and shifted by up to 6% of its size, clipped to the image."""
    x1, y1, x2, y2 = map(float, box)
    w, h = x2 - x1, y2 - y1
    boxes: list[Box] = []
    for _ in range(count):
        scale = rng.uniform(*JITTER_SCALE)
        cx = (x1 + x2) / 2 + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT) * w
        cy = (y1 + y2) / 2 + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT) * h
        half_w, half_h = scale * w / 2, scale * h / 2
        boxes.append((max(0.0, cx - half_w), max(0.0, cy - half_h),
                      min(float(width), cx + half_w), min(float(height), cy + half_h)))  # fmt: skip
    return boxes


def draw_mask(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of a face crop (uint8 grey or BGR, forehead to chin as a hand box) with a face mask drawn on.

    The mask runs from the nose (a peak at 45% of the height) to below the chin, ear to ear, in one
    of :data:`MASK_COLOURS` with a little shading and a soft edge.
    """
    if crop.dtype != np.uint8 or crop.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 grey or BGR face crop, got dtype {crop.dtype} and shape {crop.shape}")
    height, width = crop.shape[:2]
    top = rng.uniform(0.47, 0.55)
    points = np.array([(0.04, top + 0.04), (0.5, top - 0.06), (0.96, top + 0.04), (0.9, 0.82), (0.5, 1.02), (0.1, 0.82)])
    points = points + rng.uniform(-0.02, 0.02, points.shape)
    polygon = np.round(points * (width, height)).astype(np.int32)
    alpha = np.zeros((height, width), np.float32)
    cv2.fillPoly(alpha, [polygon], 1.0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, 0.01 * width))[..., None]
    colour = np.array(MASK_COLOURS[rng.integers(len(MASK_COLOURS))], np.float32) * rng.uniform(0.8, 1.1)
    # Light falls from above: the lower mask darker, plus a fabric-like noise.
    shade = np.linspace(1.05, 0.8, height, dtype=np.float32)[:, None, None]
    noise = rng.normal(1.0, 0.03, (height, width, 1)).astype(np.float32)
    image = crop.astype(np.float32) if crop.ndim == 3 else crop.astype(np.float32)[..., None]
    paint = colour[None, None, :] if crop.ndim == 3 else np.full((1, 1, 1), colour.mean(), np.float32)
    out = image * (1 - alpha) + np.clip(paint * shade * noise, 0, 255) * alpha
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out if crop.ndim == 3 else out[..., 0]


@dataclass(frozen=True)
class FaceExtras:
    """Extra face crops of one face, for :func:`facetorch.data.crops.write_crops`.

    Attributes:
        copies_of: Photos (paths) whose faces get ``copies`` jittered copies: the hand-boxed ones.
        copies: Jittered copies per face of those photos.
        mask_share: Of every other face, the share that also gets a masked copy (:func:`draw_mask`).
    """

    copies_of: Collection[Path] = ()
    copies: int = 0
    mask_share: float = 0.0

    def __call__(self, image: np.ndarray, annotation: FaceAnnotation, box: Box, rng: np.random.Generator) -> list[np.ndarray]:
        """The extra crops of the face ``box`` of ``image`` (uint8 grey or BGR)."""
        if annotation.image_path in self.copies_of:
            return [crop_box(image, b) for b in jittered_boxes(box, self.copies, annotation.width, annotation.height, rng)]
        if self.mask_share > 0 and rng.random() < self.mask_share:
            return [draw_mask(crop_box(image, box), rng)]
        return []
