"""Export a trained task as ONNX or TorchScript that carries its preprocessing and decision threshold.

The exported graph (:class:`ExportGraph`) takes a batch of images already decoded, cropped and
resized as the metadata says, N x C x H x W with pixel values in [0, 255] (ONNX: float32;
TorchScript: uint8 or float), and normalises them itself. Its outputs are named:

- classification tasks (``FaceClassifierTask``, ``IdentityTask``): ``logits`` and ``probabilities``;
- ``EmbeddingTask``: ``embedding``, the L2-normalised embedding exactly as :meth:`EmbeddingTask.embed`
  computes it at evaluation: with ``flip_test`` (the default) the test-time flip is *inside* the
  graph (the image and its mirror image are embedded, averaged and normalised again), so a gallery
  gets the same embeddings from the exported file as from the checkpoint;
- ``FaceDetectorTask``: ``score`` (face probability) and ``box`` (normalised x1, y1, x2, y2 with
  sorted corners), as :meth:`FaceDetectorTask.detect` gives them.

The file holds one JSON object under the metadata key ``facetorch`` (ONNX ``metadata_props``;
TorchScript ``_extra_files``), with exactly :data:`METADATA_KEYS`: enough to feed the model and
decide with onnxruntime, numpy and OpenCV alone (see :mod:`facetorch.inference.onnx_model`).

The export is in fp32 with contiguous memory whatever the task trained with (bf16 and
channels-last are training details). ONNX goes through ``torch.onnx.export(..., dynamo=True)``
(the ``torch.export`` based exporter, which needs ``onnxscript``; the TorchScript-based one is
deprecated in torch 2.9+); TorchScript through ``torch.jit.trace``.
"""

from __future__ import annotations

import copy
import io as bytes_io
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import facetorch
from facetorch import io
from facetorch.boxes import ordered_boxes
from facetorch.data.transforms import InputSpec
from facetorch.inference.checkpoint import model_fingerprint
from facetorch.tasks import ClassificationTask, EmbeddingTask, FaceDetectorTask, FaceTask
from facetorch.tasks.detector import flip_averaged

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "INPUT_NAME",
    "METADATA_KEY",
    "METADATA_KEYS",
    "ExportGraph",
    "export_graph",
    "export_metadata",
    "export_onnx",
    "export_task",
    "export_torchscript",
    "graph_and_onnx",
    "read_torchscript",
]

METADATA_KEY = "facetorch"
METADATA_KEYS = (
    "task", "input_name", "input_size", "channels", "color_order", "interpolation", "normalization", "align",
    "class_names", "outputs", "threshold", "threshold_metric", "facetorch_version", "fingerprint",
)  # fmt: skip
INPUT_NAME = "images"
FORMATS = ("onnx", "torchscript")
ExportFormat = Literal["onnx", "torchscript"]
DEFAULT_OPSET = 18  # onnxruntime >= 1.14 runs it; the dynamo exporter's own opset
# How InputSpec.prepare resizes (cv2.resize with INTER_AREA); the name of the OpenCV constant.
INTERPOLATION = "INTER_AREA"
PREPROCESS = (
    "outside the graph, in this order: decode the image as RGB (channels 3) or grey (channels 1), without "
    "applying EXIF orientation; if center_crop is set, keep its central fractions (height, width): "
    "ch = round(H * f_h), cw = round(W * f_w), top = (H - ch) // 2, left = (W - cw) // 2; resize to input_size "
    "[height, width] with OpenCV's interpolation (cv2.resize(image, (width, height), interpolation=...)); "
    "stack as N x C x H x W float32 pixel values in [0, 255]"
)


class ExportGraph(nn.Module):
    """Images (N, C, H, W) in [0, 255] -> a task's named outputs, normalisation inside.

    Args:
        model: The task's network (``task.model``): normalised images -> logits, an embedding, or
            ``(face logit, box)``.
        kind: ``classification``, ``embedding`` or ``detector``.
        mean: Per-channel mean in [0, 1] units (:attr:`InputSpec.mean`).
        std: Per-channel std in [0, 1] units (:attr:`InputSpec.std`).
        flip_test: Average over each image and its mirror image: the embeddings (then normalised again)
            or, for a detector, the face logit and the box (the flipped image's box mirrored back).
    """

    OUTPUTS = {"classification": ("logits", "probabilities"), "embedding": ("embedding",), "detector": ("score", "box")}

    def __init__(
        self,
        model: nn.Module,
        kind: Literal["classification", "embedding", "detector"],
        mean: Sequence[float],
        std: Sequence[float],
        flip_test: bool = False,
    ) -> None:
        super().__init__()
        if kind not in self.OUTPUTS:
            raise ValueError(f"ExportGraph kind must be one of {sorted(self.OUTPUTS)}, got {kind!r}")
        self.model = model
        self.kind = kind
        self.flip_test = bool(flip_test)
        # (x / 255 - mean) / std == (x - 255 mean) / (255 std): one subtraction and one division in the graph.
        self.register_buffer("mean", torch.tensor([255.0 * m for m in mean], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([255.0 * s for s in std], dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph's output names, in order."""
        return self.OUTPUTS[self.kind]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, C, H, W) pixel values in [0, 255] (uint8 or float) -> the outputs named in :attr:`output_names`."""
        x = (images.float() - self.mean) / self.std
        if self.kind == "classification":
            logits = self.model(x).float()
            return logits, logits.softmax(dim=1)
        if self.kind == "embedding":
            embedding = self.model(x).float()
            if self.flip_test:  # as EmbeddingTask.embed: two forwards, then the normalised sum
                embedding = F.normalize(embedding + self.model(torch.flip(x, dims=[3])).float(), dim=1)
            return (embedding,)
        logits, boxes = self.model(x)
        if self.flip_test:  # as FaceDetectorTask.predict_boxes with tta_flip
            logits, boxes = flip_averaged(self.model, x, logits, boxes)
        return torch.sigmoid(logits.float().reshape(-1)), ordered_boxes(boxes.float())


def _kind(task: FaceTask) -> Literal["classification", "embedding", "detector"]:
    if isinstance(task, ClassificationTask):
        return "classification"
    if isinstance(task, EmbeddingTask):
        return "embedding"
    if isinstance(task, FaceDetectorTask):
        return "detector"
    raise ValueError(
        f"export.py exports FaceClassifierTask, IdentityTask, EmbeddingTask and FaceDetectorTask, got {type(task).__name__}"
    )


def export_graph(task: FaceTask, spec: InputSpec) -> ExportGraph:
    """The deployable graph of ``task`` fed as ``spec`` says: a copy of its network, fp32, contiguous, on the CPU, in eval mode.

    The task itself is left as it was.
    """
    model = copy.deepcopy(task.model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    model.requires_grad_(False)
    kind = _kind(task)
    # The checkpoint's test-time flip goes into the graph, so an export answers as the task measured.
    flip = bool(getattr(task, "flip_test" if kind == "embedding" else "tta_flip", False)) if kind != "classification" else False
    return ExportGraph(model, kind, spec.mean, spec.std, flip).eval()


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(float(value)) else None


def _output_table(task: FaceTask, kind: str, flip_test: bool) -> dict[str, dict[str, Any]]:
    if kind == "classification":
        k = int(task.num_classes)
        return {
            "logits": {"shape": ["batch", k], "dtype": "float32", "description": "class scores before the softmax"},
            "probabilities": {"shape": ["batch", k], "dtype": "float32",
                              "description": "softmax of logits; column i is class_names[i]; the prediction is the argmax"},
        }  # fmt: skip
    if kind == "embedding":
        how = "of the image and its mirror image, averaged and L2-normalised again (test-time flip, inside the graph)"
        return {"embedding": {
            "shape": ["batch", int(task.embedding_dim)], "dtype": "float32",
            "description": f"unit-length face embedding {how if flip_test else '(no test-time flip)'}; compare two "
                           "with the dot product (cosine similarity)",
        }}  # fmt: skip
    averaged = " (averaged with the mirror image's, inside the graph)" if flip_test else ""
    return {
        "score": {"shape": ["batch"], "dtype": "float32",
                  "description": f"probability that the image holds a face{averaged}"},
        "box": {"shape": ["batch", 4], "dtype": "float32",
                "description": "the face box x1, y1, x2, y2 as fractions of the input width / height "
                               f"(x1 <= x2, y1 <= y2){averaged}"},
    }  # fmt: skip


def export_metadata(task: FaceTask, spec: InputSpec, graph: Optional[ExportGraph] = None) -> dict[str, Any]:
    """The ``facetorch`` metadata object of an export: how to feed the model, what comes out, how to decide.

    Args:
        task: The task being exported (its class, class names, threshold, weights fingerprint).
        spec: Its evaluation input.
        graph: Its :class:`ExportGraph` (built from ``task`` when not given).
    """
    graph = graph if graph is not None else export_graph(task, spec)
    kind = graph.kind
    threshold, metric = None, None
    if kind == "embedding":
        # The cosine threshold calibrated on validation pairs and stored in the checkpoint (None if it never validated).
        threshold, metric = _finite_or_none(float(task.threshold)), "cosine"
    elif kind == "detector":
        threshold, metric = float(task.score_threshold), "score"
    crop = getattr(spec, "center_crop", None)
    meta = {
        "task": type(task).__name__,
        "input_name": INPUT_NAME,
        "input_size": [int(spec.image_size[0]), int(spec.image_size[1])],
        "channels": int(spec.channels),
        "color_order": "RGB" if int(spec.channels) == 3 else "GRAY",
        "interpolation": INTERPOLATION,
        "normalization": {
            "inside_graph": True,
            "name": str(spec.normalization),
            "mean": [round(255.0 * m, 6) for m in spec.mean],
            "std": [round(255.0 * s, 6) for s in spec.std],
            "formula": "(x - mean[c]) / std[c] per channel c, x = pixel value in [0, 255]; done by the graph",
            "center_crop": [float(crop[0]), float(crop[1])] if crop is not None else None,
            "before_graph": PREPROCESS,
        },
        "align": getattr(spec, "align", None),
        "class_names": list(getattr(task, "class_names", [])) if kind != "embedding" else None,
        "outputs": _output_table(task, kind, graph.flip_test),
        "threshold": threshold,
        "threshold_metric": metric,
        "facetorch_version": facetorch.__version__,
        "fingerprint": model_fingerprint(task),
    }
    assert tuple(meta) == METADATA_KEYS  # the contract: exactly these keys, in this order
    return meta


def _example(spec: InputSpec, batch: int) -> torch.Tensor:
    height, width = spec.image_size
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, int(spec.channels), height, width), generator=generator).float()


def export_onnx(
    graph: ExportGraph,
    spec: InputSpec,
    metadata: dict[str, Any],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``graph`` as one ONNX file (weights inside), with ``metadata`` under ``metadata_props['facetorch']``.

    The input is float32 (N, C, H, W) named :data:`INPUT_NAME`; N is any size (``dynamic_batch``, the default), or 1.
    The file is written atomically.

    Raises:
        ImportError: ``onnx`` or ``onnxscript`` is missing (``pip install 'facetorch[export]'``).
        ValueError: the exporter cannot write ``opset`` for this model.
    """
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as error:
            raise ImportError(
                f"--format onnx needs the {module!r} package: pip install 'facetorch[export]' (onnx, onnxscript, onnxruntime)"
            ) from error
    example = _example(spec, 2 if dynamic_batch else 1)  # a batch of 2: a dimension of 1 would be specialised
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(
        graph, (example,), None, input_names=[INPUT_NAME], output_names=list(graph.output_names),
        opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
    )  # fmt: skip
    proto = program.model_proto
    written = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise ValueError(
            f"--opset {opset}: the ONNX exporter could not convert this model to opset {opset} (it wrote {written}); "
            f"use a newer --opset ({DEFAULT_OPSET}, the exporter's own, always works)"
        )
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = f"facetorch {facetorch.__version__}"
    path = Path(path)
    with io.atomic_open(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    return path


@contextmanager
def _torchscript_is_deprecated() -> Iterator[None]:
    """Silence torch's notes that ``torch.jit`` is deprecated (torch 2.14): TorchScript is what the format is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def export_torchscript(graph: ExportGraph, spec: InputSpec, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write ``graph`` as a traced TorchScript file, with ``metadata`` in ``_extra_files['facetorch']``.

    A trace takes any batch size, and uint8 or float input. The file is written atomically.
    """
    example = _example(spec, 2)
    with _torchscript_is_deprecated():
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        buffer = bytes_io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_KEY: json.dumps(metadata)})
    path = Path(path)
    with io.atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def read_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported TorchScript file and its ``facetorch`` metadata.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not TorchScript, or holds no ``facetorch`` metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist (expected a TorchScript file from tools/export.py)")
    extra = {METADATA_KEY: ""}
    with _torchscript_is_deprecated():
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{str(path)!r} is not a TorchScript file: {first[:200]}") from error
    if not extra[METADATA_KEY]:
        raise ValueError(f"{str(path)!r} is TorchScript without 'facetorch' metadata; export it with tools/export.py")
    return module, json.loads(extra[METADATA_KEY])


def check_export(graph: ExportGraph, spec: InputSpec, path: Path, fmt: ExportFormat, batch: int) -> float:
    """Max abs difference between the exported file and ``graph`` on one batch of random images."""
    images = _example(spec, batch)
    with torch.no_grad():
        expected = [t.numpy() for t in graph(images)]
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(list(graph.output_names), {INPUT_NAME: images.numpy()})
    else:
        module, _ = read_torchscript(path)
        with torch.no_grad():
            got = [t.numpy() for t in module(images)]
    return max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(got, expected))


def graph_and_onnx(task: FaceTask, spec: InputSpec, folder: Path) -> tuple[ExportGraph, Path]:
    """The export's graph of ``task`` and its ONNX file (any batch size) in ``folder``.

    What ``benchmark.py --task export`` times.
    """
    graph = export_graph(task, spec)
    path = Path(folder) / f"{type(task).__name__}.onnx"
    return graph, export_onnx(graph, spec, export_metadata(task, spec, graph), path, dynamic_batch=True)


def export_task(
    task: FaceTask,
    spec: InputSpec,
    path: str | Path,
    fmt: ExportFormat,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> dict[str, Any]:
    """Export ``task`` (fed as ``spec``) to ``path`` in ``fmt``; returns the metadata written into the file.

    Raises:
        ValueError: an unknown format, or a task that cannot be exported.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    graph = export_graph(task, spec)
    metadata = export_metadata(task, spec, graph)
    if fmt == "onnx":
        export_onnx(graph, spec, metadata, path, opset, dynamic_batch)
    else:
        export_torchscript(graph, spec, metadata, path)
    return metadata
