"""Trained models at work.

``checkpoint``: the one checkpoint loader and the model fingerprint; ``embedder``: an embedding
model (checkpoint or pretrained config) turning images and face boxes into embeddings;
``detection``: a single-face detector checkpoint on one frame; ``export``: ONNX / TorchScript
files that carry their preprocessing and threshold; ``onnx_model``: such an ONNX file run with
onnxruntime, numpy and OpenCV alone. Faces in the wild (detectors, galleries, streams) are
:mod:`facetorch.recognition`.

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
    "model_fingerprint": "checkpoint",
    "Detection": "detection",
    "Detector": "detection",
    "Embedder": "embedder",
    "FaceEmbedder": "embedder",
    "export_task": "export",
    "OnnxEmbedder": "onnx_model",
    "OnnxModel": "onnx_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"facetorch.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'facetorch.inference' has no attribute {name!r}")
