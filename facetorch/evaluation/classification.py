"""Classification: ROC curves per class with micro and macro averages, AUC, accuracy, top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import roc_auc_score, roc_curve

from facetorch.evaluation._arrays import _same_length, _to_numpy, _vector


@dataclass(frozen=True, eq=False)
class RocCurve:
    """One ROC curve: false/true positive rates, decision thresholds and the area under it.

    ``thresholds`` is empty for the macro-average curve, which has no single threshold.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def _probs_matrix(probs: Any) -> np.ndarray:
    """Return (N, C) class scores; a 1-D input is the positive-class score of a binary task."""
    p = _to_numpy(probs, "probs").astype(np.float64, copy=False)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(
            f"probs: expected shape (N, C) with C >= 2 (or (N,) for binary), got {p.shape}"
        )
    return p


def _targets_for(probs: np.ndarray, targets: Any) -> np.ndarray:
    """Validate integer class targets against an (N, C) score matrix."""
    t = _vector(targets, "targets", dtype=np.int64)
    _same_length(probs=probs, targets=t)
    if len(t) and (t.min() < 0 or t.max() >= probs.shape[1]):
        raise ValueError(
            f"targets: expected class indices in [0, {probs.shape[1] - 1}], "
            f"got range [{t.min()}, {t.max()}]"
        )
    return t


def _step_limits(curve: RocCurve, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The TPR of a piecewise-linear ROC curve just before and just after each FPR in ``grid``.

    At a vertex with several points (a vertical step) "before" is the bottom of the step and
    "after" its top; elsewhere both are the value on the segment.
    """
    # fpr is sorted and tpr non-decreasing: the first point at an fpr value is the bottom.
    xs, first = np.unique(curve.fpr, return_index=True)
    last = len(curve.fpr) - 1 - np.unique(curve.fpr[::-1], return_index=True)[1]
    bottom, top = curve.tpr[first], curve.tpr[last]
    # Segment k runs from the top at xs[k] to the bottom at xs[k + 1].
    k = np.clip(np.searchsorted(xs, grid, side="right") - 1, 0, len(xs) - 2)
    frac = (grid - xs[k]) / (xs[k + 1] - xs[k])
    on_segment = top[k] + frac * (bottom[k + 1] - top[k])
    j = np.clip(np.searchsorted(xs, grid), 0, len(xs) - 1)
    vertex = xs[j] == grid
    return np.where(vertex, bottom[j], on_segment), np.where(vertex, top[j], on_segment)


def _macro_curve(curves: Sequence[RocCurve]) -> RocCurve:
    """Average per-class ROC curves on the union of their false positive rates.

    As in scikit-learn's ROC example, but each vertical step is kept (the mean tpr just before
    and just after every fpr value), so the area is exactly the mean of the per-class AUCs.
    """
    grid = np.unique(np.concatenate([c.fpr for c in curves]))
    limits = [_step_limits(c, grid) for c in curves]
    below = np.mean([b for b, _ in limits], axis=0)
    above = np.mean([a for _, a in limits], axis=0)
    fpr = np.repeat(grid, 2)
    tpr = np.stack([below, above], axis=1).ravel()
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=np.empty(0), auc=float(_trapezoid_auc(fpr, tpr)))


def roc_curves(
    probs: Any, targets: Any, class_names: Sequence[str] | None = None
) -> dict[str, RocCurve]:
    """One-vs-rest ROC curves per class, plus ``"micro"`` and ``"macro"`` averages.

    Args:
        probs: (N, C) class scores (probabilities or logits), or (N,) positive-class scores.
        targets: (N,) integer class indices.
        class_names: names for the C classes (keys of the result); default ``"0"``, ``"1"``, ...

    Returns:
        Curves keyed by class name, then ``"micro"`` (all one-hot cells flattened) and
        ``"macro"`` (mean per-class tpr on the union of fprs). A class that is absent from
        ``targets`` (or is every target) has no defined curve and is left out.
    """
    p = _probs_matrix(probs)
    t = _targets_for(p, targets)
    num_classes = p.shape[1]
    names = (
        [str(i) for i in range(num_classes)]
        if class_names is None
        else [str(n) for n in class_names]
    )
    if len(names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names, got {len(names)}")
    if len(t) == 0:
        raise ValueError("targets: expected at least one sample, got none")
    onehot = np.eye(num_classes, dtype=bool)[t]

    result: dict[str, RocCurve] = {}
    for c, name in enumerate(names):
        positives = int(onehot[:, c].sum())
        if positives == 0 or positives == len(t):
            continue  # one-class problem: fpr or tpr is 0/0
        fpr, tpr, thr = roc_curve(onehot[:, c], p[:, c])
        result[name] = RocCurve(fpr, tpr, thr, float(_trapezoid_auc(fpr, tpr)))
    per_class = list(result.values())

    fpr, tpr, thr = roc_curve(onehot.ravel(), p.ravel())
    result["micro"] = RocCurve(fpr, tpr, thr, float(_trapezoid_auc(fpr, tpr)))
    if per_class:
        result["macro"] = _macro_curve(per_class)
    return result


def binary_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of binary ``labels`` ranked by ``scores``; NaN if one class only."""
    s = _vector(scores, "scores")
    y = _vector(labels, "labels", dtype=bool)
    _same_length(scores=s, labels=y)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def accuracy(preds: Any, targets: Any) -> float:
    """Share of correct predictions; ``preds`` is (N,) labels or (N, C) scores (argmax taken)."""
    p = _to_numpy(preds, "preds")
    if p.ndim == 2:
        p = p.argmax(axis=1)
    t = _to_numpy(targets, "targets")
    if p.ndim != 1 or t.shape != p.shape:
        raise ValueError(
            f"expected preds (N,) or (N, C) and targets (N,), got {p.shape} and {t.shape}"
        )
    if len(t) == 0:
        return float("nan")
    return float(np.mean(p == t))


def top_k_accuracy(probs: Any, targets: Any, k: int = 5) -> float:
    """Share of samples whose target is among the ``k`` highest scores (all of them if k >= C)."""
    p = _probs_matrix(probs)
    t = _targets_for(p, targets)
    if k < 1:
        raise ValueError(f"k: expected k >= 1, got {k}")
    if len(t) == 0:
        return float("nan")
    if k >= p.shape[1]:
        return 1.0
    topk = np.argpartition(-p, k - 1, axis=1)[:, :k]
    return float(np.mean((topk == t[:, None]).any(axis=1)))
