"""Plots and tables written into a run folder (matplotlib, Agg backend, atomic PNG writes)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed anywhere in facetorch
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from facetorch import io  # noqa: E402


def plot_roc_curves(curves: Mapping[str, Any], path: Path, title: str = "ROC") -> None:
    """One ROC line per entry (objects with ``fpr``, ``tpr``, ``auc``), AUC in the legend."""
    figure, axis = plt.subplots(figsize=(6, 5))
    for name, curve in curves.items():
        style = {"linestyle": ":", "linewidth": 3} if name in ("micro", "macro") else {"linewidth": 1.5}
        label = f"{name}-average (AUC = {curve.auc:.4f})" if name in ("micro", "macro") else f"{name} (AUC = {curve.auc:.4f})"
        axis.plot(curve.fpr, curve.tpr, label=label, **style)
    axis.plot([0, 1], [0, 1], "k--", linewidth=1)
    axis.set(xlim=(0.0, 1.0), ylim=(0.0, 1.02), xlabel="False positive rate", ylabel="True positive rate", title=title)
    axis.legend(loc="lower right", fontsize=8)
    io.save_figure(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "Confusion matrix") -> None:
    """Counts with true labels on rows and predicted labels on columns (sklearn's orientation)."""
    n = len(class_names)
    size = min(4 + 0.3 * n, 30)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = np.arange(n)
    axis.set_xticks(ticks, labels=class_names, rotation=90 if n > 4 else 0, fontsize=max(4, 10 - n // 10))
    axis.set_yticks(ticks, labels=class_names, fontsize=max(4, 10 - n // 10))
    axis.set(xlabel="Predicted label", ylabel="True label", title=title)
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                axis.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if matrix[i, j] > threshold else "black")
    io.save_figure(figure, path)


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of every metric in a Lightning ``CSVLogger`` ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return series
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                series.setdefault(key, []).append((int(float(epoch)), float(value)))
    return series


def plot_learning_curves(series: Mapping[str, list[tuple[int, float]]], path: Path) -> bool:
    """Loss and accuracy per epoch, train against val. Returns False when there is nothing to plot."""
    panels = [(name, [k for k in (f"train_{name}", f"val_{name}") if series.get(k)]) for name in ("loss", "acc")]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (name, keys) in zip(axes[0], panels):
        for key in keys:
            by_epoch: dict[int, float] = {}
            for epoch, value in series[key]:
                by_epoch[epoch] = value  # the last value logged in an epoch is the epoch's aggregate
            epochs = sorted(by_epoch)
            axis.plot(epochs, [by_epoch[e] for e in epochs], marker="o", label=key)
        axis.set(xlabel="epoch", ylabel=name, title=name)
        axis.legend()
    io.save_figure(figure, path)
    return True


def plot_class_balance(counts: Mapping[str, Sequence[int]], class_names: Sequence[str], path: Path) -> None:
    """Images per class for each split (grouped bars; a line per split when there are many classes)."""
    n = len(class_names)
    figure, axis = plt.subplots(figsize=(min(4 + 0.25 * n, 30), 4))
    x = np.arange(n)
    width = 0.8 / max(1, len(counts))
    for i, (split, values) in enumerate(counts.items()):
        axis.bar(x + i * width, values, width=width, label=f"{split} ({int(np.sum(values))})")
    axis.set_xticks(x + 0.4 - width / 2, labels=class_names, rotation=90 if n > 4 else 0, fontsize=max(4, 10 - n // 10))
    axis.set(ylabel="images", title="Class balance per split")
    axis.legend()
    io.save_figure(figure, path)


def plot_image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int = 8) -> None:
    """A grid of images (uint8, grey or RGB) with a title each (e.g. label, or predicted vs true)."""
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image, title in zip(axes.ravel(), images, titles):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.set_title(title, fontsize=7)
    io.save_figure(figure, path)


def plot_score_histograms(scores: np.ndarray, same: np.ndarray, path: Path, threshold: float = float("nan")) -> None:
    """Histograms of pair similarities, same-person pairs against different-person pairs."""
    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(float(np.min(scores)), float(np.max(scores)), 41)
    axis.hist(scores[same], bins=bins, alpha=0.6, label=f"same person ({int(same.sum())})")
    axis.hist(scores[~same], bins=bins, alpha=0.6, label=f"different people ({int((~same).sum())})")
    if np.isfinite(threshold):
        axis.axvline(threshold, color="k", linestyle="--", label=f"calibrated threshold {threshold:.3f}")
    axis.set(xlabel="Cosine similarity", ylabel="Pairs", title="Pair similarities")
    axis.legend(fontsize=8)
    io.save_figure(figure, path)


def to_display_image(image: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """The model input (C, H, W) back as the resized uint8 picture, (H, W) grey or (H, W, 3) RGB.

    With the transform's ``mean`` / ``std`` (in [0, 1] units) the normalisation is undone, which
    gives back the resized uint8 image exactly (the normalisation is affine). Without them each
    image is min-max scaled.
    """
    pixels = image.detach().float().cpu()
    if pixels.ndim != 3:
        raise ValueError(f"Expected one image of shape (C, H, W), got shape {tuple(pixels.shape)}")
    if mean is not None and std is not None:
        shape = (-1, 1, 1)
        pixels = pixels * torch.tensor(std).reshape(shape) + torch.tensor(mean).reshape(shape)
    else:
        low, high = pixels.min(), pixels.max()
        pixels = (pixels - low) / (high - low) if high > low else torch.zeros_like(pixels)
    picture = (pixels.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return picture[..., 0] if picture.shape[2] == 1 else picture
