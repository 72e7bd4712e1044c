"""Grad-CAM, Guided Backprop and Guided Grad-CAM for any ``nn.Module``, without captum.

Each explainer is a context manager: hooks live only inside the ``with`` block and are removed
on exit, even after an exception. A call puts the model in eval mode, computes gradients with
``torch.autograd.grad`` (so parameter ``.grad`` is never touched) and restores every module's
``training`` flag afterwards. Calls also work under ``torch.inference_mode()`` (e.g. inside a
Lightning validation callback).

Example:
    >>> with GradCAM(model, "features.28") as cam:
    ...     heat = cam(images, ClassTarget(1))  # (B, H, W) in [0, 1]

Targets are callables mapping the model output to one score per sample, shape (B,), in the
spirit of pytorch-grad-cam.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "ClassTarget",
    "DetectorTarget",
    "DissimilarityTarget",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "PredictedClassTarget",
    "SimilarityTarget",
    "Target",
    "normalize_guided",
    "overlay_heatmap",
]

Target = Callable[[Any], Tensor]
"""Maps the model output to one score per sample, a tensor of shape (B,)."""

DetectorPart = Literal["score", "x1", "y1", "x2", "y2"]
_E = TypeVar("_E", bound="_Explainer")


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Display helpers
# --------------------------------------------------------------------------------------------


def normalize_guided(grad: Tensor, reduce_channels: bool = False) -> Tensor:
    """Scale (guided) gradients to [0, 1] for display, per sample.

    Args:
        grad: Gradients (B, C, H, W).
        reduce_channels: If true, return the magnitude (max of ``|grad|`` over channels) scaled by
            its maximum, (B, H, W). Otherwise keep the sign: 0.5 is zero gradient, 0 and 1 the
            largest negative / positive value, (B, C, H, W).

    Returns:
        Tensor in [0, 1], all zeros (or all 0.5) for a sample whose gradient is zero.
    """
    if not isinstance(grad, Tensor) or grad.ndim != 4:
        raise ValueError(f"Expected gradients of shape (B, C, H, W), got {_describe(grad)}")
    grad = grad.detach()
    if reduce_channels:
        magnitude = grad.abs().amax(dim=1)  # (B, H, W)
        return magnitude / _per_sample_scale(magnitude)
    return 0.5 + 0.5 * grad / _per_sample_scale(grad.abs())


def overlay_heatmap(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a heatmap over an image with a matplotlib colormap (no OpenCV).

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3), uint8 in [0, 255] or float in [0, 1] (clipped).
        heat: (H, W) in [0, 1] (clipped; NaN counts as 0).
        alpha: Weight of the heatmap, in [0, 1].
        colormap: Name of a matplotlib colormap.

    Returns:
        (H, W, 3) uint8 image.
    """
    from matplotlib import colormaps  # imported here to keep `import facetorch.explain.gradcam` light

    rgb = _to_rgb_float(image)  # (H, W, 3) in [0, 1]
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    if heat.shape != rgb.shape[:2]:
        raise ValueError(
            f"Expected a heatmap of shape {rgb.shape[:2]} to match the image, got {heat.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1], got {alpha}")
    colored = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3]  # (H, W, 3), drop alpha
    blended = (1.0 - alpha) * rgb + alpha * colored
    return np.round(blended * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Explainers
# --------------------------------------------------------------------------------------------


class _Explainer:
    """Context-manager plumbing shared by the explainers; subclasses add hooks and ``__call__``."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected an nn.Module, got {type(model).__name__}")
        self.model = model
        self._entered = False

    def __enter__(self: _E) -> _E:
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} is already active; enter it only once")
        self._register()
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._entered = False
        self._remove()

    def _register(self) -> None:
        """Install hooks; called on ``__enter__``."""

    def _remove(self) -> None:
        """Remove every hook installed by ``_register``; called on ``__exit__``."""

    def _require_entered(self) -> None:
        if not self._entered:
            name = type(self).__name__
            raise RuntimeError(
                f"{name} must be used as a context manager: "
                f"`with {name}(model, ...) as explainer: explainer(images, target)`"
            )


class GradCAM(_Explainer):
    """Grad-CAM (Selvaraju et al., 2017) on one named layer.

    Args:
        model: Any module whose forward takes images (B, C, H, W).
        layer: Name of the layer in ``model.named_modules()``, e.g. ``"features.28"`` or
            ``"layer4"``. Its output must be a tensor (B, C', h, w). If the layer runs more than
            once per forward, the last call is explained.
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__(model)
        self.layer = layer
        self._module = _resolve_layer(model, layer)
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._capturing = False
        self._activation: Tensor | None = None

    def _register(self) -> None:
        self._handle = self._module.register_forward_hook(self._capture)

    def _remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
        if not self._capturing:  # other forwards inside the `with` block pass through untouched
            return None
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError(
                f"Expected layer {self.layer!r} to output a tensor (B, C, h, w), "
                f"got {_describe(output)}"
            )
        # Keep the layer's own output and hand a clone downstream: a following in-place op
        # (ReLU(inplace=True) after a conv, as in torchvision VGG/ResNet) then modifies the clone,
        # so the captured activation keeps its values and its place in the graph.
        if not output.requires_grad:
            # Nothing upstream is trainable (frozen weights): make the activation a leaf, since
            # Grad-CAM only needs gradients from the score down to this layer.
            output = output.detach().requires_grad_(True)
        self._activation = output
        return output.clone()

    def __call__(self, images: Tensor, target: Target | int | None = None) -> Tensor:
        """Compute Grad-CAM heatmaps.

        Args:
            images: Input batch (B, C, H, W).
            target: Score to explain: a callable (see the targets in this module), a class
                index, or ``None`` for the predicted class.

        Returns:
            Heatmaps (B, H, W) in [0, 1] at the input resolution, detached.
        """
        self._require_entered()
        score_fn = _as_target(target)
        with _grad_enabled(), eval_mode(self.model):
            # No gradient is needed below the layer: an input that required grad would make every
            # conv below it keep more for backward (about 5% slower on VGG16, measured).
            inputs = _prepare_input(images, requires_grad=False)  # (B, C, H, W)
            activation, grads = self._activation_and_grad(inputs, score_fn)  # (B, C', h, w) each
            cam = _weighted_cam(activation, grads)  # (B, h, w)
            return _resize_and_normalize(cam, inputs.shape[-2:])

    def _activation_and_grad(self, inputs: Tensor, score_fn: Target) -> tuple[Tensor, Tensor]:
        self._capturing = True
        try:
            output = self.model(inputs)
            activation = self._activation
            if activation is None:
                raise RuntimeError(
                    f"Layer {self.layer!r} was not called during the model's forward"
                )
            score = _score(score_fn, output, len(inputs))
            (grads,) = torch.autograd.grad(score.sum(), activation, allow_unused=True)
        finally:
            self._capturing = False
            self._activation = None
        if grads is None:
            raise RuntimeError(f"The target score does not depend on layer {self.layer!r}")
        return activation.detach(), grads


class GuidedBackprop(_Explainer):
    """Guided Backpropagation (Springenberg et al., 2015).

    The input gradient where every ReLU passes back only positive gradients at positive inputs.

    ``nn.ReLU`` (in-place or not), ``F.relu``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``
    and ``Tensor.relu_`` are all caught: a ``TorchFunctionMode``, active only during the forward
    of a call, swaps them for a guided ReLU. Other activations are left unchanged.

    Args:
        model: Any module whose forward takes images (B, C, H, W).
    """

    normalize = staticmethod(normalize_guided)

    def __call__(self, images: Tensor, target: Target | int | None = None) -> Tensor:
        """Compute the guided input gradient.

        Args:
            images: Input batch (B, C, H, W).
            target: Score to explain: a callable, a class index, or ``None`` for the
                predicted class.

        Returns:
            Raw guided gradient (B, C, H, W), detached; see ``normalize_guided`` for display.
        """
        self._require_entered()
        score_fn = _as_target(target)
        with _grad_enabled(), eval_mode(self.model):
            inputs = _prepare_input(images)  # (B, C, H, W)
            with _GuidedReLUMode():
                output = self.model(inputs)
            score = _score(score_fn, output, len(inputs))
            (grad,) = torch.autograd.grad(score.sum(), inputs)
        return grad


class GuidedGradCAM(_Explainer):
    """Guided Grad-CAM: the guided backprop map times the Grad-CAM heatmap.

    The two parts use separate passes, so the CAM weights come from plain gradients.

    Args:
        model: Any module whose forward takes images (B, C, H, W).
        layer: Grad-CAM layer name in ``model.named_modules()``.
    """

    normalize = staticmethod(normalize_guided)

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__(model)
        self.layer = layer
        self._cam = GradCAM(model, layer)
        self._guided = GuidedBackprop(model)
        self._stack: contextlib.ExitStack | None = None

    def _register(self) -> None:
        # ExitStack: if entering the second part fails, the first is exited again.
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._cam)
            stack.enter_context(self._guided)
            self._stack = stack.pop_all()

    def _remove(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __call__(self, images: Tensor, target: Target | int | None = None) -> Tensor:
        """Compute Guided Grad-CAM maps.

        Args:
            images: Input batch (B, C, H, W).
            target: Score to explain: a callable, a class index, or ``None`` for the
                predicted class.

        Returns:
            Raw maps (B, C, H, W), detached; see ``normalize_guided`` for display.
        """
        self._require_entered()
        cam = self._cam(images, target)  # (B, H, W)
        guided = self._guided(images, target)  # (B, C, H, W)
        return guided * cam[:, None]


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward keeps only positive gradients at positive inputs."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, inplace: bool) -> Tensor:
        ctx.save_for_backward(x > 0)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_min_(0)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (positive,) = ctx.saved_tensors
        return grad.clamp_min(0) * positive, None


# Every way a ReLU reaches torch, and whether it is in place. nn.ReLU calls F.relu.
_RELU_INPLACE: dict[Callable[..., Any], bool] = {
    F.relu: False,  # the real flag comes from its `inplace` argument
    torch.relu: False,
    torch.relu_: True,
    Tensor.relu: False,
    Tensor.relu_: True,
}


class _GuidedReLUMode(TorchFunctionMode):
    """Routes every ReLU call to ``_GuidedReLU`` while active."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RELU_INPLACE:
            inplace = _RELU_INPLACE[func]
            if func is F.relu:
                inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            return _GuidedReLU.apply(args[0], inplace)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _grad_enabled() -> Iterator[None]:
    # Lightning runs validation under inference_mode; autograd needs it off.
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block; restore every module's own flag afterwards."""
    # Per module: a model may be in train mode with, e.g., a frozen BatchNorm in eval mode.
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _prepare_input(images: Tensor, requires_grad: bool = True) -> Tensor:
    """Return a fresh leaf copy of the batch, requiring grad unless told not to.

    Call it with autograd enabled.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"Expected images as a float tensor (B, C, H, W), got {_describe(images)}")
    # The clone turns an inference tensor into a normal one; requiring grad on the input makes
    # every activation part of the graph even when all parameters are frozen.
    return images.detach().clone().requires_grad_(requires_grad)


def _as_target(target: Target | int | None) -> Target:
    if target is None:
        return PredictedClassTarget()
    if isinstance(target, int):
        return ClassTarget(target)
    if callable(target):
        return target
    raise TypeError(
        f"Expected a target callable, a class index or None, got {type(target).__name__}"
    )


def _score(score_fn: Target, output: Any, batch_size: int) -> Tensor:
    score = score_fn(output)
    if not isinstance(score, Tensor) or score.shape != (batch_size,):
        raise ValueError(
            f"Expected the target to return one score per sample, a tensor of shape "
            f"({batch_size},), "
            f"got {_describe(score)}"
        )
    return score


def _weighted_cam(activation: Tensor, grads: Tensor) -> Tensor:
    """ReLU of the activation maps (B, C, h, w) weighted by their mean gradient -> (B, h, w)."""
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return F.relu((weights * activation).sum(dim=1))


def _resize_and_normalize(cam: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear upsample (B, h, w) -> (B, H, W), then min-max per sample; flat maps become 0."""
    cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)  # (B, H*W)
    low = flat.amin(dim=1)[:, None, None]  # (B, 1, 1)
    span = flat.amax(dim=1)[:, None, None] - low
    # A flat map has numerator 0 everywhere; dividing by 1 there keeps it 0 instead of NaN.
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((cam - low) / span).clamp(0.0, 1.0)


def _per_sample_scale(values: Tensor) -> Tensor:
    """Max of non-negative values per sample, shaped to broadcast; 1 where the max is 0."""
    peak = values.flatten(1).amax(dim=1).reshape(-1, *([1] * (values.ndim - 1)))
    return torch.where(peak > 0, peak, torch.ones_like(peak))


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


def _to_rgb_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}"
        )
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(np.nan_to_num(image.astype(np.float64)), 0.0, 1.0)
    raise TypeError(f"Expected a uint8 or float image, got dtype {image.dtype}")


def _resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if isinstance(layer, str) and layer and layer in modules:
        return modules[layer]
    raise ValueError(
        f"Unknown layer {layer!r} in {type(model).__name__}. {_layer_candidates(model, layer)}"
    )


def _layer_candidates(model: nn.Module, layer: Any, limit: int = 8) -> str:
    """List likely layer names: close matches, top-level children, last convolutions."""
    names = [name for name, _ in model.named_modules() if name]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    parts = ["Expected a name from model.named_modules()."]
    close = difflib.get_close_matches(str(layer), names, n=5) if isinstance(layer, str) else []
    if close:
        parts.append(f"Close matches: {close}.")
    children = [name for name, _ in model.named_children()]
    parts.append(f"Top-level modules: {_truncate(children, 2 * limit)}.")
    if convs:
        parts.append(
            f"Convolutions (last {min(limit, len(convs))} of {len(convs)}): {convs[-limit:]}."
        )
    return " ".join(parts)


def _truncate(names: list[str], limit: int) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


def _describe(value: Any) -> str:
    """Describe a value for error messages: shape for tensors, type otherwise."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__}"
