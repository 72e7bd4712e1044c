"""Trained models at work.

``checkpoint``: the one checkpoint loader; ``gallery``: enrolled faces, identified or ``unknown``;
``detection``: single-face detection on images, video and cameras; ``export``: ONNX / TorchScript
files that carry their preprocessing and threshold; ``onnx_model``: such an ONNX file run with
onnxruntime, numpy and OpenCV alone.

The names below are imported on first use, so ``facetorch.inference.onnx_model`` loads without
torch (a deployment of an exported model has no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "LoadedTask": "checkpoint",
    "load_task": "checkpoint",
    "read_checkpoint": "checkpoint",
    "Detection": "detection",
    "DetectionRun": "detection",
    "Detector": "detection",
    "detect_source": "detection",
    "Embedder": "gallery",
    "Gallery": "gallery",
    "GalleryError": "gallery",
    "export_task": "export",
    "OnnxEmbedder": "onnx_model",
    "OnnxModel": "onnx_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"facetorch.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'facetorch.inference' has no attribute {name!r}")
