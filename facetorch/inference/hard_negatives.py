"""Hard negatives by bootstrapping: windows away from the faces that a face / non-face checkpoint takes for faces.

Classical detectors were trained this way (Sung and Poggio; Viola and Jones): run the current
classifier over the non-face parts of photos, keep what it wrongly calls a face, retrain. Used by
``prepare_crops.py --hard_negatives_from CKPT`` through :func:`facetorch.data.crops.write_crops`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Optional, Protocol

import cv2
import numpy as np
import torch

from facetorch.boxes import Box, box_iou, crop_box
from facetorch.data.annotations import FaceAnnotation
from facetorch.data.crops import sample_negative_boxes
from facetorch.inference.checkpoint import CheckpointError, load_task
from facetorch.tasks import FaceClassifierTask

__all__ = ["FACE_CLASSES", "HardNegativeMiner"]

FACE_CLASSES = ("face", "non_face")  # the face_crops layout's classes
FLAG = "--hard_negatives_from"
DUPLICATE_IOU = 0.5  # two kept windows overlapping more than this show the same false face
MAX_FACE_SHARE = 0.5  # a window holding more of a face the finder sees may be a real (unannotated) face


class _FaceFinder(Protocol):
    def detect(self, image: np.ndarray) -> np.ndarray: ...


class HardNegativeMiner:
    """Scores random windows of a photo with a face / non-face checkpoint and keeps its false faces.

    The windows are drawn like the random negatives (:func:`~facetorch.data.crops.sample_negative_boxes`:
    face-shaped, IoU <= 0.1 with every face), so a hard negative is a negative of the same kind
    that the model gets wrong.

    Args:
        ckpt_path: A ``FaceClassifierTask`` checkpoint trained on the ``face_crops`` layout.
        per_image: Most hard negatives kept per photo (the highest face scores first).
        windows: Random windows scored per photo.
        threshold: Smallest face probability that counts as a false face.
        face_finder: A second opinion on where faces are (``detect(image) -> (N, 4) boxes``, e.g. the
            Haar cascade): a window that holds more than half of one of its faces is never kept, so
            a face that the photo's annotation misses (a bystander) is not taught as a non-face.
            ``None``: annotations only.
        photos: Mine only these photos (paths); ``None``: every photo.
        batch_size: Windows per forward pass.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        CheckpointError: It is not a face / non-face ``FaceClassifierTask`` checkpoint.
    """

    def __init__(
        self,
        ckpt_path: str | Path,
        per_image: int = 5,
        windows: int = 50,
        threshold: float = 0.5,
        face_finder: Optional[_FaceFinder] = None,
        photos: Optional[Collection[Path]] = None,
        batch_size: int = 128,
    ) -> None:
        if per_image < 1 or windows < 1 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"expected per_image >= 1, windows >= 1 and a threshold in [0, 1], got {per_image}, "
                             f"{windows} and {threshold}")  # fmt: skip
        loaded = load_task(ckpt_path, FaceClassifierTask, "cpu", flag=FLAG, tool="prepare_crops.py")
        names = list(loaded.task.class_names)
        if sorted(names) != sorted(FACE_CLASSES):
            raise CheckpointError(
                f"{FLAG} {str(ckpt_path)!r} is a classifier of the classes {names[:5]}{' ...' if len(names) > 5 else ''}; "
                f"expected a face / non-face model (classes {list(FACE_CLASSES)}, trained on the face_crops layout "
                "with configs/face_vgg.yaml)"
            )
        self.loaded = loaded
        self.face_index = names.index("face")
        self.per_image = per_image
        self.windows = windows
        self.threshold = threshold
        self.face_finder = face_finder
        self.photos = None if photos is None else {Path(p) for p in photos}
        self.batch_size = batch_size

    def face_probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Face probability of each uint8 crop (grey or BGR, any size), as the model saw its training crops."""
        channels = self.loaded.input.channels
        tensors = [self.loaded.transform(_to_channels(crop, channels)) for crop in crops]
        scores = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                logits = self.loaded.task(torch.stack(tensors[start : start + self.batch_size]))
                scores.append(logits.float().softmax(dim=1)[:, self.face_index].numpy())
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)

    def __call__(self, image: np.ndarray, annotation: FaceAnnotation, rng: np.random.Generator) -> list[Box]:
        """Up to ``per_image`` windows of ``image`` (uint8 grey or BGR) away from its faces that the model calls faces."""
        if self.photos is not None and Path(annotation.image_path) not in self.photos:
            return []
        return self.mine(image, annotation.boxes, rng)

    def mine(self, image: np.ndarray, faces: Sequence[Box], rng: np.random.Generator) -> list[Box]:
        """Up to ``per_image`` windows of ``image`` away from ``faces`` that the model calls faces, best first."""
        height, width = image.shape[:2]
        boxes = sample_negative_boxes(width, height, [tuple(map(float, f)) for f in faces], self.windows, rng)
        if boxes and self.face_finder is not None:
            found = np.asarray(self.face_finder.detect(image), dtype=np.float64).reshape(-1, 4)
            boxes = [box for box in boxes if _largest_share(box, found) <= MAX_FACE_SHARE]
        if not boxes:
            return []
        probs = self.face_probabilities([crop_box(image, box) for box in boxes])
        kept: list[Box] = []
        for i in np.argsort(-probs, kind="stable"):
            if probs[i] < self.threshold or len(kept) == self.per_image:
                break
            if kept and box_iou([boxes[i]], kept).max() > DUPLICATE_IOU:
                continue
            kept.append(boxes[i])
        return kept


def _largest_share(box: Box, faces: np.ndarray) -> float:
    """The largest fraction of any face's area that ``box`` covers (0 without faces)."""
    if len(faces) == 0:
        return 0.0
    x1, y1, x2, y2 = box
    inter_w = np.clip(np.minimum(x2, faces[:, 2]) - np.maximum(x1, faces[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(y2, faces[:, 3]) - np.maximum(y1, faces[:, 1]), 0, None)
    areas = np.maximum((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]), 1e-9)
    return float((inter_w * inter_h / areas).max())


def _to_channels(crop: np.ndarray, channels: int) -> np.ndarray:
    """A grey or BGR crop (as written to PNG) -> the model's channels in RGB order (as the datasets read it back)."""
    if crop.ndim == 2:
        return crop if channels == 1 else cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
