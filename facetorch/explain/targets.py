"""Targets of an explanation: callables mapping a model's output to one score per sample, shape (B,).

In the spirit of pytorch-grad-cam: a class logit (:class:`ClassTarget`), a detector's face score
or box corner (:class:`DetectorTarget`), or an embedding's similarity to a reference
(:class:`SimilarityTarget`, :class:`NextSampleSimilarity`, :class:`DissimilarityTarget`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ClassTarget",
    "DetectorPart",
    "DetectorTarget",
    "DissimilarityTarget",
    "NextSampleSimilarity",
    "PredictedClassTarget",
    "SimilarityTarget",
    "Target",
]

Target = Callable[[Any], Tensor]
"""Maps the model output to one score per sample, a tensor of shape (B,)."""

DetectorPart = Literal["score", "x1", "y1", "x2", "y2"]


class ClassTarget:
    """Score of one class per sample, for classifiers with output (B, num_classes).

    Args:
        index: One class for every sample (int), one class per sample (sequence or tensor of
            length B), or ``None`` for each sample's predicted class (argmax).
    """

    def __init__(self, index: int | Sequence[int] | Tensor | None = None) -> None:
        if index is not None and not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(
                    f"Expected per-sample class indices of shape (B,), got {tuple(index.shape)}"
                )
        self.index = index

    def __call__(self, output: Tensor) -> Tensor:
        logits = _check_logits(output)  # (B, K)
        if self.index is None:
            return logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
        if isinstance(self.index, int):
            if not -logits.shape[1] <= self.index < logits.shape[1]:
                raise IndexError(
                    f"Class index {self.index} is out of range for an output with "
                    f"{logits.shape[1]} classes"
                )
            return logits[:, self.index]
        # Cloned here: an index made under inference_mode cannot be saved for backward.
        index = self.index.to(logits.device).clone()
        if index.shape != (logits.shape[0],):
            raise ValueError(
                f"Expected {logits.shape[0]} class indices (one per sample), "
                f"got shape {tuple(index.shape)}"
            )
        return logits.gather(1, index[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index!r})"


class PredictedClassTarget(ClassTarget):
    """Score of each sample's predicted class (argmax of the output)."""

    def __init__(self) -> None:
        super().__init__(None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DetectorTarget:
    """One output of a single-face detector: the face logit or one box coordinate.

    The detector's forward must return either a tuple/list ``(logit, boxes)`` (``output[0]``
    and ``output[1]``) or a dict with keys ``"logit"`` and ``"boxes"``, where ``logit`` has
    shape (B, 1) or (B,) and ``boxes`` has shape (B, 4) as ``x1, y1, x2, y2``.

    Args:
        part: ``"score"`` for the face logit (before the sigmoid), or a box coordinate.
    """

    _BOX_COLUMNS: dict[str, int] = {"x1": 0, "y1": 1, "x2": 2, "y2": 3}

    def __init__(self, part: DetectorPart = "score") -> None:
        if part != "score" and part not in self._BOX_COLUMNS:
            raise ValueError(f"Expected part in ('score', 'x1', 'y1', 'x2', 'y2'), got {part!r}")
        self.part = part

    def __call__(self, output: Any) -> Tensor:
        logit, boxes = _split_detector_output(output)
        if self.part == "score":
            return logit
        return boxes[:, self._BOX_COLUMNS[self.part]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.part!r})"


class SimilarityTarget:
    """Cosine similarity between the output embedding and a reference: why two faces match.

    Args:
        reference: Reference embedding, shape (D,) for all samples or (B, D) per sample.
    """

    sign: float = 1.0

    def __init__(self, reference: Tensor) -> None:
        if not isinstance(reference, Tensor) or reference.ndim not in (1, 2):
            shape = (
                tuple(reference.shape)
                if isinstance(reference, Tensor)
                else type(reference).__name__
            )
            raise ValueError(f"Expected a reference embedding of shape (D,) or (B, D), got {shape}")
        self.reference = reference

    def __call__(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 2:
            raise ValueError(
                f"Expected an embedding output of shape (B, D), got {_describe(output)}"
            )
        # Cloned (and detached) here: a reference made under inference_mode cannot be saved for
        # backward, and the explanation must not flow into the reference.
        reference = self.reference.detach().to(device=output.device, dtype=output.dtype).clone()
        if reference.ndim == 1:
            reference = reference.expand_as(output)  # (B, D)
        if reference.shape != output.shape:
            raise ValueError(
                f"Expected a reference of shape ({output.shape[1]},) or {tuple(output.shape)} "
                f"to match the embeddings, got {tuple(self.reference.shape)}"
            )
        return self.sign * F.cosine_similarity(output, reference, dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reference of shape {tuple(self.reference.shape)})"


class NextSampleSimilarity:
    """Cosine similarity of each embedding to the next one in the batch (the last to the first).

    It explains why neighbouring faces match, with no reference image. The neighbour is detached,
    so each map explains its own image only.
    """

    description = "similarity to the next image"

    def __call__(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 2:
            raise ValueError(f"Expected an embedding output of shape (B, D), got {_describe(output)}")
        neighbour = torch.roll(output.detach(), shifts=-1, dims=0).clone()
        return F.cosine_similarity(output, neighbour, dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DissimilarityTarget(SimilarityTarget):
    """Negative cosine similarity to a reference: why a face was rejected as a match."""

    sign = -1.0


def _check_logits(output: Any) -> Tensor:
    if not isinstance(output, Tensor) or output.ndim != 2:
        raise ValueError(
            f"Expected classifier output of shape (B, num_classes), got {_describe(output)}"
        )
    return output


def _split_detector_output(output: Any) -> tuple[Tensor, Tensor]:
    """(logit (B,), boxes (B, 4)) from a detector's tuple/list or dict output."""
    if isinstance(output, Mapping):
        if "logit" not in output or "boxes" not in output:
            raise ValueError(
                f"Expected detector output keys 'logit' and 'boxes', got {sorted(output)}"
            )
        logit, boxes = output["logit"], output["boxes"]
    elif isinstance(output, (tuple, list)) and len(output) >= 2:
        logit, boxes = output[0], output[1]
    else:
        raise ValueError(
            f"Expected detector output (logit, boxes) or {{'logit': ..., 'boxes': ...}}, "
            f"got {_describe(output)}"
        )
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Expected detector boxes of shape (B, 4), got {_describe(boxes)}")
    batch_size = boxes.shape[0]
    if not isinstance(logit, Tensor) or logit.shape not in ((batch_size,), (batch_size, 1)):
        raise ValueError(
            f"Expected a detector logit of shape ({batch_size}, 1) or ({batch_size},), "
            f"got {_describe(logit)}"
        )
    return logit.reshape(batch_size), boxes


def _describe(value: Any) -> str:
    """Describe a value for error messages: shape for tensors, type otherwise."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__}"
