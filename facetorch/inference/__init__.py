"""Trained models at work: the one checkpoint loader (``checkpoint``), the gallery of enrolled
faces (``gallery``) and single-face detection on images, video and cameras (``detection``)."""

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
