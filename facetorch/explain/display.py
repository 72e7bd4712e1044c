"""Display helpers of explanations: guided gradients scaled for viewing, and heatmaps over images."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from facetorch.explain.targets import _describe

__all__ = ["normalize_guided", "overlay_heatmap"]


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


def _per_sample_scale(values: Tensor) -> Tensor:
    """Max of non-negative values per sample, shaped to broadcast; 1 where the max is 0."""
    peak = values.flatten(1).amax(dim=1).reshape(-1, *([1] * (values.ndim - 1)))
    return torch.where(peak > 0, peak, torch.ones_like(peak))


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
