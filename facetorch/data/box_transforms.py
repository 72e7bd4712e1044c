"""Box-aware transforms (albumentations ``BboxParams``) for the single-face detector.

A training sample goes through: a random crop that either keeps the whole face (a positive) or
stays clear of it (the box is dropped and the sample becomes a negative), a resize to the model
input, a horizontal flip, brightness / contrast, gamma and an RGB shift, then normalisation.
Evaluation only resizes and normalises. Boxes come out as ``(x1, y1, x2, y2)`` normalised to
[0, 1] of the input size (the original project used 120x120 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop

from facetorch.data.transforms import ToTensor

__all__ = ["BoxAugmentation", "BoxTransform", "FaceCrop", "build_box_transform"]

# Share of the face box a "face-free" crop may still contain; the rest of it is cropped away,
# and BboxParams(min_visibility) drops the remains.
MAX_FACE_OVERLAP = 0.1
MIN_VISIBILITY = 0.5


@dataclass
class BoxAugmentation:
    """Training augmentation of the detector. A probability or limit of 0 turns its part off.

    Attributes:
        crop_p: Probability of a random crop that keeps the whole face.
        min_crop_scale: Smallest crop side, as a fraction of the image side (the face always fits).
        negative_p: Probability of a crop clear of the face instead: the sample becomes a negative.
        negative_scale: Range of the side of a face-free crop, as a fraction of the image side.
        hflip: Probability of a horizontal flip.
        brightness: Brightness change limit.
        contrast: Contrast change limit.
        color_p: Probability of the brightness / contrast change.
        gamma: Largest gamma change in percent (20 gives gamma 0.8 to 1.2).
        gamma_p: Probability of the gamma change.
        rgb_shift: Largest shift of each colour channel, in 0..255 units (RGB images only).
        rgb_shift_p: Probability of the RGB shift.
    """

    crop_p: float = 0.7
    min_crop_scale: float = 0.5
    negative_p: float = 0.2
    negative_scale: tuple[float, float] = (0.25, 0.6)
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    color_p: float = 0.5
    gamma: float = 20.0
    gamma_p: float = 0.3
    rgb_shift: float = 15.0
    rgb_shift_p: float = 0.3


class FaceCrop(BaseCrop):
    """Random crop that keeps the whole face, or (with ``negative_p``) one clear of the face.

    The crop keeps the image's aspect ratio. A face-free crop holds at most
    :data:`MAX_FACE_OVERLAP` of the face's area; when none is found in a few tries (a face that
    fills the image) the crop keeps the face instead. An image without a face gets any crop.

    Args:
        crop_p: Probability of a face-keeping crop (else the image is kept whole).
        min_crop_scale: Smallest side of a face-keeping crop, as a fraction of the image side.
        negative_p: Probability of a face-free crop (checked first).
        negative_scale: (min, max) side of a face-free crop, as a fraction of the image side.
        tries: Attempts at placing a face-free crop.
    """

    def __init__(
        self,
        crop_p: float = 0.7,
        min_crop_scale: float = 0.5,
        negative_p: float = 0.2,
        negative_scale: Sequence[float] = (0.25, 0.6),
        tries: int = 20,
    ) -> None:
        super().__init__(p=1.0)
        if not 0.0 < min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale: expected a fraction in (0, 1], got {min_crop_scale}")
        low, high = negative_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"negative_scale: expected 0 < min <= max <= 1, got {tuple(negative_scale)}")
        self.crop_p = crop_p
        self.min_crop_scale = min_crop_scale
        self.negative_p = negative_p
        self.negative_scale = (float(low), float(high))
        self.tries = tries

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        boxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))
        face = None
        if len(boxes):  # normalised inside albumentations; back to pixels
            x1, y1, x2, y2 = boxes[0, :4] * np.array([width, height, width, height])
            face = (float(x1), float(y1), float(x2), float(y2))
        rng = self.py_random
        if rng.random() < self.negative_p:
            coords = self._face_free(width, height, face)
            if coords is not None:
                return {"crop_coords": coords}
        if rng.random() >= self.crop_p:
            return {"crop_coords": (0, 0, width, height)}
        return {"crop_coords": self._keeping(width, height, face)}

    def _window(self, width: int, height: int, scale: float) -> tuple[int, int]:
        return max(1, int(round(width * scale))), max(1, int(round(height * scale)))

    def _keeping(self, width: int, height: int, face: Optional[tuple[float, float, float, float]]) -> tuple[int, int, int, int]:
        rng = self.py_random
        crop_w, crop_h = self._window(width, height, rng.uniform(self.min_crop_scale, 1.0))
        if face is None:
            x0, y0 = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            return x0, y0, x0 + crop_w, y0 + crop_h
        fx1, fy1, fx2, fy2 = int(np.floor(face[0])), int(np.floor(face[1])), int(np.ceil(face[2])), int(np.ceil(face[3]))
        crop_w = min(width, max(crop_w, fx2 - fx1))
        crop_h = min(height, max(crop_h, fy2 - fy1))
        x0 = rng.randint(max(0, fx2 - crop_w), max(0, min(fx1, width - crop_w)))
        y0 = rng.randint(max(0, fy2 - crop_h), max(0, min(fy1, height - crop_h)))
        return x0, y0, x0 + crop_w, y0 + crop_h

    def _face_free(
        self, width: int, height: int, face: Optional[tuple[float, float, float, float]]
    ) -> Optional[tuple[int, int, int, int]]:
        rng = self.py_random
        for _ in range(self.tries):
            crop_w, crop_h = self._window(width, height, rng.uniform(*self.negative_scale))
            x0, y0 = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            if face is None:
                return x0, y0, x0 + crop_w, y0 + crop_h
            inter_w = max(0.0, min(face[2], x0 + crop_w) - max(face[0], x0))
            inter_h = max(0.0, min(face[3], y0 + crop_h) - max(face[1], y0))
            area = (face[2] - face[0]) * (face[3] - face[1])
            if inter_w * inter_h <= MAX_FACE_OVERLAP * area:
                return x0, y0, x0 + crop_w, y0 + crop_h
        return None

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_p", "min_crop_scale", "negative_p", "negative_scale", "tries")


def _augmentations(aug: BoxAugmentation, channels: int) -> tuple[list[A.BasicTransform], list[A.BasicTransform]]:
    """(geometric steps before the resize, photometric steps after it)."""
    before: list[A.BasicTransform] = []
    if aug.crop_p > 0 or aug.negative_p > 0:
        before.append(FaceCrop(aug.crop_p, aug.min_crop_scale, aug.negative_p, aug.negative_scale))
    after: list[A.BasicTransform] = []
    if aug.hflip > 0:
        after.append(A.HorizontalFlip(p=aug.hflip))
    if aug.color_p > 0 and (aug.brightness or aug.contrast):
        after.append(A.RandomBrightnessContrast(brightness_limit=aug.brightness, contrast_limit=aug.contrast, p=aug.color_p))
    if aug.gamma_p > 0 and aug.gamma > 0:
        after.append(A.RandomGamma(gamma_limit=(100 - aug.gamma, 100 + aug.gamma), p=aug.gamma_p))
    if channels == 3 and aug.rgb_shift_p > 0 and aug.rgb_shift > 0:
        limit = (-aug.rgb_shift, aug.rgb_shift)
        after.append(A.RGBShift(r_shift_limit=limit, g_shift_limit=limit, b_shift_limit=limit, p=aug.rgb_shift_p))
    return before, after


class BoxTransform:
    """Maps an image and its face boxes to a model input and a detection target.

    Called as ``transform(image, boxes)`` with ``image`` uint8 (H, W) or (H, W, 3) and ``boxes``
    a sequence of pixel ``(x1, y1, x2, y2)`` (empty for no face, at most one face is kept).

    Returns:
        ``(image, target)``: a float tensor (C, H, W) and ``{"label": tensor(1.0 | 0.0),
        "box": tensor (4,)}``, the box normalised to [0, 1] of the input (zeros for no face).

    Like :class:`~facetorch.data.transforms.AlbumentationsTransform`, the pipeline is re-seeded
    from ``torch.initial_seed()`` whenever that changes, so runs with one seed repeat.
    """

    def __init__(self, pipeline: A.Compose, image_size: Sequence[int]) -> None:
        self.pipeline = pipeline
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.to_tensor = ToTensor()
        self._seed: Optional[int] = None

    def __call__(self, image: np.ndarray, boxes: Sequence[Sequence[float]] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seed = torch.initial_seed() % 2**32
        if seed != self._seed:
            self.pipeline.set_random_seed(seed)
            self._seed = seed
        pixel_boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[:1]
        out = self.pipeline(image=image, bboxes=pixel_boxes, labels=np.ones(len(pixel_boxes), dtype=np.int64))
        kept = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float32)
        box = np.clip(kept[0] / scale, 0.0, 1.0) if len(kept) else np.zeros(4, dtype=np.float32)
        target = {"label": torch.tensor(float(len(kept) > 0)), "box": torch.from_numpy(box)}
        return self.to_tensor(out["image"]), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def build_box_transform(
    image_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    augmentation: Optional[BoxAugmentation] = None,
    channels: int = 3,
) -> BoxTransform:
    """The detector's transform: augmented for training, or only resized for evaluation.

    Args:
        image_size: Model input (height, width).
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel std in [0, 1] units.
        augmentation: Random training augmentation; ``None`` gives the deterministic eval transform.
        channels: 1 or 3 (the RGB shift applies to colour images only).
    """
    height, width = int(image_size[0]), int(image_size[1])
    before, after = _augmentations(augmentation, channels) if augmentation is not None else ([], [])
    steps = [*before, A.Resize(height, width, interpolation=cv2.INTER_AREA), *after]
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=MIN_VISIBILITY, clip=True)
    return BoxTransform(A.Compose(steps, bbox_params=bbox_params), (height, width))
