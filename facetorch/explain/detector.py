"""Does the detector look at the face? Grad-CAM of the face score against the annotated box.

For each image with a face: whether the Grad-CAM peak falls inside the annotated face box, and
the share of the map's mass inside it. ``box_area_share`` (the box's share of the image) is what
a uniform map would score on the second number: the chance level to compare with.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from facetorch.explain.gradcam import GradCAM, Target

__all__ = ["box_masks", "peak_in_box", "peak_in_box_report"]


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks (B, H, W) of the pixels whose centre lies in each normalised xyxy box."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    b = boxes.detach().float().cpu()
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (B, H)
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (B, W)
    return inside_y[:, :, None] & inside_x[:, None, :]


def peak_in_box(heatmaps: Tensor, boxes: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: peak inside the box (bool), map mass inside it, and the box's share of the image.

    Args:
        heatmaps: (B, H, W) non-negative maps.
        boxes: (B, 4) normalised ``x1, y1, x2, y2``.
    """
    if heatmaps.ndim != 3 or boxes.shape != (heatmaps.shape[0], 4):
        raise ValueError(f"Expected heatmaps (B, H, W) and boxes (B, 4), got {tuple(heatmaps.shape)} and {tuple(boxes.shape)}")
    heat = heatmaps.detach().float().cpu()
    batch, height, width = heat.shape
    masks = box_masks(boxes, height, width)
    peak = heat.reshape(batch, -1).argmax(dim=1)
    hit = masks.reshape(batch, -1).gather(1, peak[:, None])[:, 0]
    total = heat.reshape(batch, -1).sum(dim=1)
    inside = (heat * masks).reshape(batch, -1).sum(dim=1)
    mass = torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))
    return hit.numpy(), mass.numpy(), masks.reshape(batch, -1).float().mean(dim=1).numpy()


def peak_in_box_report(
    task: nn.Module, loader: DataLoader, layer: str, target: Target, device: Optional[torch.device] = None
) -> dict[str, Any]:
    """Grad-CAM peak-in-box statistics over every image with a face in ``loader``.

    Args:
        task: The detector (in eval mode; its weights loaded).
        loader: Batches ``(images, {"label", "box"})`` of :class:`~facetorch.data.detection.FaceBoxDataset`.
        layer: Grad-CAM layer name (the task's ``cam_layer``).
        target: The score explained (the face score: ``task.explain_target("score")``).
        device: Where the images go; the task's device by default.

    Returns:
        ``peak_in_box_rate`` (share of images whose map peak is inside the box), ``mass_in_box``
        (mean share of map mass inside the box), ``box_area_share`` (mean box share of the image,
        the uniform-map level), ``num_samples`` (images with a face).
    """
    device = device or next(task.parameters()).device
    hits, masses, areas = [], [], []
    with GradCAM(task, layer) as cam:
        for images, labels in loader:
            keep = labels["label"] > 0.5
            if not keep.any():
                continue
            heat = cam(images[keep].to(device), target)
            hit, mass, area = peak_in_box(heat, labels["box"][keep])
            hits.append(hit)
            masses.append(mass)
            areas.append(area)
    if not hits:
        raise ValueError("Expected at least one image with an annotated face, got none")
    hit, mass, area = (np.concatenate(v) for v in (hits, masses, areas))
    return {
        "peak_in_box_rate": float(hit.mean()),
        "mass_in_box": float(mass.mean()),
        "box_area_share": float(area.mean()),
        "num_samples": int(len(hit)),
    }
