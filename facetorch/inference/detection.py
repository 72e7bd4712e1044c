"""A trained single-face detector checkpoint at work: one frame in, its face score and box out.

Running it over images, videos and cameras is :mod:`facetorch.recognition.detect`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from facetorch.inference.checkpoint import load_task
from facetorch.tasks.detector import FaceDetectorTask

__all__ = ["Detection", "Detector", "draw"]

GREEN = (0, 200, 0)  # BGR, for frames drawn with OpenCV
GREY = (160, 160, 160)


@dataclass(frozen=True)
class Detection:
    """The detector's answer for one frame: face probability and box in the frame's pixels."""

    score: float
    face: bool
    box: Optional[tuple[float, float, float, float]]


class Detector:
    """A checkpoint of :class:`~facetorch.tasks.FaceDetectorTask` with its evaluation transform.

    The input size, channels and normalisation come from the data settings stored in the
    checkpoint, so frames are prepared exactly as the test images were.

    Args:
        ckpt_path: A Lightning checkpoint of the detector.
        threshold: A face score at or above this counts as a face.
        device: ``cpu``, ``cuda`` or ``None`` for CUDA when available.
        tta_flip: Average each frame's detection with its mirror image's (``model.tta_flip``);
            ``None``: as the checkpoint was trained to be evaluated.
    """

    def __init__(self, ckpt_path: str | Path, threshold: float = 0.5, device: Optional[str] = None,
                 tta_flip: Optional[bool] = None) -> None:  # fmt: skip
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"--threshold must be in (0, 1), got {threshold}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded = load_task(ckpt_path, FaceDetectorTask, self.device, tool="detect.py")
        self.task = loaded.task
        if tta_flip is not None:
            self.task.tta_flip = tta_flip
        self.image_size = loaded.input.image_size
        self.channels = loaded.input.channels
        self.transform = loaded.transform
        self.threshold = threshold
        self.model_seconds = 0.0

    def __call__(self, frame_bgr: np.ndarray) -> Detection:
        """Detect the face in one BGR (or grey) uint8 frame, as OpenCV reads it."""
        height, width = frame_bgr.shape[:2]
        if frame_bgr.ndim == 2:
            picture = frame_bgr if self.channels == 1 else cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
        else:
            code = cv2.COLOR_BGR2GRAY if self.channels == 1 else cv2.COLOR_BGR2RGB
            picture = cv2.cvtColor(frame_bgr, code)
        start = time.perf_counter()
        batch = self.transform(picture)[None].to(self.device)
        with torch.inference_mode():
            scores, boxes = self.task.detect(batch)
        score, box = float(scores[0]), boxes[0].cpu().numpy()
        self.model_seconds += time.perf_counter() - start
        face = score >= self.threshold
        pixels = tuple(float(v) for v in box * [width, height, width, height]) if face else None
        return Detection(score, face, pixels)


def draw(frame_bgr: np.ndarray, detection: Detection) -> np.ndarray:
    """A copy of the frame with the face box and its score (green); no box when there is no face."""
    out = frame_bgr.copy() if frame_bgr.ndim == 3 else cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(out.shape[:2]) / 240))
    if detection.box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), GREEN, thickness)
        origin = (x1, max(12, y1 - 4))
        cv2.putText(out, f"face {detection.score:.2f}", origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, GREEN, thickness)
    else:
        cv2.putText(out, f"no face {detection.score:.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, GREY, thickness)
    return out
