"""A face's quality in one frame, 0 to 1: big enough, sharp enough, facing the camera.

:func:`face_quality` multiplies three parts:

- size: the box's shorter side over ``full_size`` pixels (dlib's network sees a 150-pixel chip
  in which the face is about 100 pixels wide), capped at 1;
- sharpness: the variance of the Laplacian of the face's grey pixels at 64x64, ``v / (v + k)``
  (``k`` the variance at which a face counts as half sharp: motion blur and defocus take the
  fine detail away);
- pose (when the 5 landmarks are known): how far the nose sits from the middle of the eyes,
  along the eye line, in eye distances; 0 for a frontal face, about 0.5 in profile; the part is
  ``1 - offset / max_offset``, at least 0.

The weights that recognition gives a frame's embedding follow this score, so a blurred, small or
turned face counts less in a track's name.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

__all__ = ["face_quality", "pose_offset"]

# Laplacian variance of a half-sharp face at 64x64: LFW's faces measure 202 / 415 / 758 (5th / 50th / 95th
# percentile), the same blurred by a 1.5-pixel Gaussian 14 / 24 / 43 (docs/video.md): 60 lies between the two.
SHARP_HALF = 60.0
FULL_SIZE = 100.0
MAX_OFFSET = 0.45


def pose_offset(points: np.ndarray) -> float:
    """How far the nose sits from the middle of the eyes along the eye line, in eye distances (dlib's 5 points).

    dlib's order: the outer and inner corners of one eye, then of the other, then the bottom of the nose.
    """
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eye_a, eye_b, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    axis = eye_b - eye_a
    distance = float(np.linalg.norm(axis))
    if distance < 1e-6:
        return 1.0
    return abs(float((nose - (eye_a + eye_b) / 2) @ (axis / distance))) / distance


def face_quality(grey: np.ndarray, box: tuple[float, float, float, float], points: Optional[np.ndarray] = None,
                 full_size: float = FULL_SIZE, sharp_half: float = SHARP_HALF,
                 max_offset: float = MAX_OFFSET) -> float:  # fmt: skip
    """The quality (0 to 1) of the face in ``box`` of a grey frame; ``points``: its 5 landmarks, if known."""
    height, width = grey.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    size = min(1.0, min(box[2] - box[0], box[3] - box[1]) / full_size)
    face = cv2.resize(grey[y1:y2, x1:x2], (64, 64), interpolation=cv2.INTER_AREA)
    variance = float(cv2.Laplacian(face, cv2.CV_32F).var())
    sharp = variance / (variance + sharp_half)
    pose = 1.0 if points is None else max(0.0, 1.0 - pose_offset(points) / max_offset)
    return float(size * sharp * pose)
