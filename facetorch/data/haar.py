"""OpenCV Haar cascade face detector: the classical baseline and the crop finder for photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facetorch.boxes import largest_box

__all__ = ["HAND_BOX", "CascadeLoadError", "HaarFaceDetector", "haar_to_hand_box"]

# A hand-drawn face box of face_boxes_dev against the Haar box of the same face, in Haar box widths
# (medians over the 48 of its 124 faces that the cascade finds, IoU >= 0.3): width, height, and how
# far the centre sits below the Haar centre. Hand boxes are taller than wide (height / width 1.38);
# Haar boxes are square and take in more cheek, so Haar faces resized to the crops' 120x80 look
# unlike the hand-boxed faces a face / non-face model is tested on.
HAND_BOX = (0.80, 1.08, 0.04)


class CascadeLoadError(OSError):
    """The Haar cascade file could not be found or loaded."""


class HaarFaceDetector:
    """Viola-Jones face detector from OpenCV's bundled cascades.

    Args:
        cascade: A file name in ``cv2.data.haarcascades``, or a path to a cascade XML.
        scale_factor: Image pyramid step of ``detectMultiScale``.
        min_neighbors: Overlapping detections needed to keep a face (higher: fewer false faces).
        min_size: Smallest face ``(width, height)`` in pixels.

    Raises:
        CascadeLoadError: If the cascade cannot be loaded (OpenCV 5 dropped cascades: use opencv < 5).
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: tuple[int, int] = (24, 24),
    ) -> None:
        self.cascade_path = _cascade_path(cascade)
        if not hasattr(cv2, "CascadeClassifier"):
            raise CascadeLoadError(
                f"cv2.CascadeClassifier is missing in OpenCV {cv2.__version__}; "
                "the Haar detector needs opencv-python-headless < 5"
            )
        self._classifier = cv2.CascadeClassifier(str(self.cascade_path))
        if self._classifier.empty():
            raise CascadeLoadError(
                f"could not load Haar cascade {str(self.cascade_path)!r} with OpenCV {cv2.__version__}: "
                "expected an existing cascade XML (the bundled ones need opencv-python-headless < 5)"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = tuple(min_size)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Find faces.

        Args:
            image: ``uint8`` array, grey ``(H, W)`` / ``(H, W, 1)`` or colour ``(H, W, 3|4)``. BGR and
                RGB give (almost) the same grey image, so either channel order works.

        Returns:
            ``(N, 4)`` float32 boxes ``(x1, y1, x2, y2)`` in pixels; ``(0, 4)`` when none.
        """
        grey = _to_grey(image)
        found = self._classifier.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=self.min_size
        )
        boxes = np.asarray(found, dtype=np.float32).reshape(-1, 4)  # () when nothing is found
        boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x1, y1, x2, y2)
        return boxes

    def largest(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        """The face box with the largest area, or ``None`` when no face is found."""
        boxes = self.detect(image)
        if len(boxes) == 0:
            return None
        return tuple(float(v) for v in boxes[largest_box(boxes)])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cascade={self.cascade_path.name!r}, scale_factor={self.scale_factor}, "
            f"min_neighbors={self.min_neighbors}, min_size={self.min_size})"
        )


def haar_to_hand_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """A Haar box reshaped to a hand-drawn face box (:data:`HAND_BOX`), clipped to the ``width`` x ``height`` image."""
    x1, y1, x2, y2 = box
    side = x2 - x1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + HAND_BOX[2] * side
    half_w, half_h = HAND_BOX[0] * side / 2, HAND_BOX[1] * side / 2
    return (max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(width), cx + half_w), min(float(height), cy + half_h))


def _cascade_path(cascade: str) -> Path:
    path = Path(cascade)
    if path.is_file():
        return path
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(data, "haarcascades"):
        raise CascadeLoadError(
            f"cv2.data.haarcascades is missing in OpenCV {cv2.__version__}, so {cascade!r} cannot be found; "
            "the Haar detector needs opencv-python-headless < 5"
        )
    return Path(data.haarcascades) / cascade


def _to_grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
