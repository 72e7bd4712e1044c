"""Speed of the explainers in ``facetorch.explain.gradcam`` against the same work in plain autograd.

``python tools/benchmark.py --task gradcam`` runs :func:`run_gradcam`: torchvision VGG16 and
ResNet50 (random weights, nothing is downloaded) explain one fixed batch. As in
``facetorch.bench.training``, compared variants alternate in one process and medians are reported,
because absolute images/s on a shared machine are noisy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from facetorch.bench.training import device_name
from facetorch.explain.gradcam import ClassTarget, GradCAM, GuidedBackprop

# Grad-CAM layer per model: the last convolution of VGG16 (as in the gradcam docs and tests) and
# the last residual stage of ResNet50. ``clone``: VGG16's features.28 feeds an in-place ReLU,
# which would overwrite a captured activation, so the hand-written hook must clone there too.
GRADCAM_MODELS: dict[str, dict[str, Any]] = {
    "vgg16": {"layer": "features.28", "clone": True},
    "resnet50": {"layer": "layer4", "clone": False},
}


def manual_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, clone: bool) -> Tensor:
    """Grad-CAM for each sample's predicted class, written directly in plain autograd.

    Args:
        model: Classifier in eval mode, output (B, K).
        layer: The module whose output (B, C, h, w) is explained.
        images: Batch (B, C, H, W).
        clone: Hand a clone of the activation downstream (needed when an in-place op follows).

    Returns:
        Heatmaps (B, H, W) in [0, 1], detached.
    """
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        captured.append(output)
        return output.clone() if clone else None

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(images)
            score = logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
            (grads,) = torch.autograd.grad(score.sum(), captured[0])
    finally:
        handle.remove()
    with torch.no_grad():
        activation = captured[0]
        weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        low = cam.amin(dim=(1, 2), keepdim=True)
        span = cam.amax(dim=(1, 2), keepdim=True) - low
        return (cam - low) / span.clamp_min(torch.finfo(cam.dtype).tiny)


def input_gradient(model: nn.Module, images: Tensor) -> Tensor:
    """Plain gradient of each sample's predicted-class logit with respect to the input, (B, C, H, W)."""
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
        (grad,) = torch.autograd.grad(score.sum(), inputs)
    return grad


def _normalized(cams: Tensor) -> Tensor:
    """Per-sample min-max scaling of maps (B, H, W) to [0, 1], as facetorch's GradCAM returns them."""
    low = cams.amin(dim=(1, 2), keepdim=True)
    span = cams.amax(dim=(1, 2), keepdim=True) - low
    return (cams - low) / span.clamp_min(torch.finfo(cams.dtype).tiny)


def peer_variants(model: nn.Module, layer: nn.Module, images: Tensor) -> dict[str, Callable[[], Tensor]]:
    """Grad-CAM and Guided Backprop of the peer libraries that are installed, on the same model and batch.

    ``pytorch_grad_cam`` (jacobgil/pytorch-grad-cam) and ``captum_gradcam`` (captum's
    LayerGradCam, upsampled bilinearly and min-max scaled per sample, as facetorch does) explain
    each sample's predicted class at the same layer; ``captum_guided`` is captum's GuidedBackprop.
    """
    variants: dict[str, Callable[[], Tensor]] = {}
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    size = tuple(images.shape[-2:])
    try:
        from pytorch_grad_cam import GradCAM as PeerGradCAM
    except ImportError:
        pass
    else:

        def pytorch_grad_cam() -> Tensor:
            with PeerGradCAM(model=model, target_layers=[layer]) as cam:
                return torch.from_numpy(cam(input_tensor=images, targets=None)).to(images.device)

        variants["pytorch_grad_cam"] = pytorch_grad_cam
    try:
        from captum.attr import GuidedBackprop as PeerGuidedBackprop
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError:
        pass
    else:

        def captum_gradcam() -> Tensor:
            cams = LayerGradCam(model, layer).attribute(images, target=predicted, relu_attributions=True)
            cams = LayerAttribution.interpolate(cams, size, interpolate_mode="bilinear")[:, 0]
            return _normalized(cams.detach())

        variants["captum_gradcam"] = captum_gradcam
        variants["captum_guided"] = lambda: PeerGuidedBackprop(model).attribute(images.clone(), target=predicted).detach()
    return variants


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, Tensor]:
    """Seconds one call takes (synchronising CUDA around it), and its result."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _measure_model(name: str, images: Tensor, repeats: int, warmup: int, peers: bool = False) -> dict[str, Any]:
    """Time the variants alternately on one model; images/s medians, ratios and map agreement."""
    spec = GRADCAM_MODELS[name]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).to(images.device).eval()
    layer = dict(model.named_modules())[spec["layer"]]
    batch = len(images)

    def facetorch_cam() -> Tensor:
        with GradCAM(model, spec["layer"]) as cam:
            return cam(images, ClassTarget(None))

    def guided() -> Tensor:
        with GuidedBackprop(model) as explainer:
            return explainer(images, ClassTarget(None))

    variants: dict[str, Callable[[], Tensor]] = {
        "gradcam": facetorch_cam,
        "manual": lambda: manual_gradcam(model, layer, images, spec["clone"]),
        "guided": guided,
        "input_grad": lambda: input_gradient(model, images),
    }
    if peers:
        variants.update(peer_variants(model, layer, images))
    rates: dict[str, list[float]] = {key: [] for key in variants}
    maps: dict[str, Tensor] = {}
    for i in range(warmup + repeats):  # alternate, so slow phases of a noisy machine hit every variant
        # Reverse the order every other round: each variant inherits the allocator and cache state
        # its predecessor leaves (VGG16 at batch 32 frees gigabytes), which biased a fixed order.
        order = list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]
        for key, fn in order:
            seconds, maps[key] = _timed(fn, images.device)
            if i >= warmup:
                rates[key].append(batch / seconds)
    medians = {key: statistics.median(values) for key, values in rates.items()}
    return {
        f"gradcam_{name}_img_s": round(medians["gradcam"], 3),
        f"manual_gradcam_{name}_img_s": round(medians["manual"], 3),
        f"gradcam_vs_manual_{name}": round(medians["gradcam"] / medians["manual"], 3),
        f"gradcam_max_abs_diff_{name}": float((maps["gradcam"] - maps["manual"]).abs().max()),
        f"guided_backprop_{name}_img_s": round(medians["guided"], 3),
        f"input_grad_{name}_img_s": round(medians["input_grad"], 3),
        f"guided_vs_input_grad_{name}": round(medians["guided"] / medians["input_grad"], 3),
        **_peer_report(name, medians, maps),
    }


def _peer_report(name: str, medians: dict[str, float], maps: dict[str, Tensor]) -> dict[str, Any]:
    """The ratio of images/s (facetorch / peer) and the largest difference between the maps, per peer."""
    report: dict[str, Any] = {}
    for peer, ours in (("pytorch_grad_cam", "gradcam"), ("captum_gradcam", "gradcam"), ("captum_guided", "guided")):
        if peer not in medians:
            continue
        report[f"{peer}_{name}_img_s"] = round(medians[peer], 3)
        report[f"{ours}_vs_{peer}_{name}"] = round(medians[ours] / medians[peer], 3)
        report[f"{peer}_max_abs_diff_{name}"] = float((maps[ours].float().cpu() - maps[peer].float().cpu()).abs().max())
    return report


def run_gradcam(
    batch_size: int = 32,
    image_size: int = 224,
    repeats: int = 3,
    warmup: int = 1,
    accelerator: str = "cpu",
    models: Sequence[str] = ("vgg16", "resnet50"),
    peers: bool = True,
) -> dict[str, Any]:
    """Time Grad-CAM and Guided Backprop in fp32 on torchvision models with random weights.

    Args:
        batch_size: Images per batch (one fixed, seeded random batch).
        image_size: Height and width of the square images.
        repeats: Timed alternating repetitions; medians are reported.
        warmup: Untimed repetitions first (allocator, oneDNN / cuDNN kernel choice).
        accelerator: ``"cpu"`` or ``"gpu"``.
        models: Names from ``GRADCAM_MODELS``.
        peers: Also time pytorch-grad-cam and captum (those installed) on the same model and batch.

    Returns:
        A flat dict; per model ``gradcam_vs_manual_<model>`` (facetorch / hand-written images/s,
        goal >= 0.9), ``gradcam_max_abs_diff_<model>`` between the two maps,
        ``guided_backprop_<model>_img_s`` and ``guided_vs_input_grad_<model>`` (against one plain
        forward + backward to the input), the images/s medians, and the device; with ``peers``,
        ``gradcam_vs_<peer>_<model>`` / ``guided_vs_captum_guided_<model>`` (facetorch / peer
        images/s) and ``<peer>_max_abs_diff_<model>`` (map agreement).
    """
    unknown = sorted(set(models) - set(GRADCAM_MODELS))
    if unknown:
        raise ValueError(f"Unknown models {unknown}; expected names from {sorted(GRADCAM_MODELS)}")
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)
    result: dict[str, Any] = {
        "task": "gradcam",
        "device": device_name(accelerator),
        "dtype": "float32",
        "batch_size": batch_size,
        "image_size": image_size,
        "repeats": repeats,
        "warmup": warmup,
    }
    for name in models:
        result.update(_measure_model(name, images, repeats, warmup, peers))
    return result
