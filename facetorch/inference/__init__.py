"""Trained models at work.

``checkpoint``: the one checkpoint loader; ``gallery``: enrolled faces, identified or ``unknown``;
``detection``: single-face detection on images, video and cameras.
"""

from facetorch.inference.checkpoint import CheckpointError, LoadedTask, load_task, read_checkpoint
from facetorch.inference.detection import Detection, DetectionRun, Detector, detect_source
from facetorch.inference.gallery import Embedder, Gallery, GalleryError

__all__ = [
    "CheckpointError",
    "Detection",
    "DetectionRun",
    "Detector",
    "Embedder",
    "Gallery",
    "GalleryError",
    "LoadedTask",
    "detect_source",
    "load_task",
    "read_checkpoint",
]
