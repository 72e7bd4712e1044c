"""Evaluation metrics as pure functions on arrays: ROC, verification folds, open-set, IoU, AP.

Every function accepts numpy arrays, lists or torch tensors (converted with ``.detach().cpu()``)
and returns plain Python floats or numpy arrays, so results go straight into ``metrics.json``.
Nothing here imports Lightning (or torch itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "RocCurve",
    "accuracy",
    "average_precision_single",
    "best_threshold",
    "binary_auc",
    "box_iou",
    "detection_summary",
    "dir_at_fpir",
    "equal_error_rate",
    "fpir_threshold",
    "lfw_fold_ids",
    "open_set_metrics",
    "paired_iou",
    "recognition_metrics",
    "roc_curves",
    "tar_at_far",
    "top_k_accuracy",
    "verification_metrics",
]


# --------------------------------------------------------------------------------------------
# conversion and checks
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array-like, got {type(x).__name__}") from err


def _vector(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return ``x`` as a 1-D array of ``dtype``, or raise naming the argument and its shape."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape (N,), got shape {arr.shape}")
    return arr.astype(dtype, copy=False)


def _same_length(**arrays: np.ndarray) -> int:
    """Check that all arrays have the same first dimension and return it."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"expected arrays of equal length, got {lengths}")
    return next(iter(lengths.values()))


def _scores_and_labels(scores: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, same) pair of verification arrays."""
    s = _vector(scores, "scores")
    y = _vector(same, "same", dtype=bool)
    n = _same_length(scores=s, same=y)
    if n == 0:
        raise ValueError("expected at least one pair, got empty arrays")
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"scores: expected finite values, got {int(np.sum(~np.isfinite(s)))} non-finite"
        )
    return s, y


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# verification (pairs): scores are similarities, higher means "same"
# --------------------------------------------------------------------------------------------


def lfw_fold_ids(num_matched: int, num_mismatched: int, n_folds: int = 10) -> np.ndarray:
    """Fold index per pair for a pairs list of ``num_matched`` matched then mismatched pairs.

    LFW convention: the matched and the mismatched pairs are each cut into ``n_folds``
    contiguous chunks (the first chunks one longer when the count does not divide), and fold i
    is matched chunk i plus mismatched chunk i.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds: expected >= 2, got {n_folds}")
    if min(num_matched, num_mismatched) < n_folds:
        raise ValueError(
            f"expected at least n_folds={n_folds} matched and mismatched pairs each, "
            f"got {num_matched} matched and {num_mismatched} mismatched"
        )
    return np.concatenate([_chunk_ids(num_matched, n_folds), _chunk_ids(num_mismatched, n_folds)])


def _chunk_ids(n: int, n_folds: int) -> np.ndarray:
    """Chunk index of each of ``n`` items cut into ``n_folds`` contiguous, near-equal chunks."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds, dtype=np.int64), sizes)


def _accuracy_at(s: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy of the rule ``score >= threshold`` means "same", for each threshold."""
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    true_accepts = len(pos) - np.searchsorted(pos, thresholds, side="left")
    true_rejects = np.searchsorted(neg, thresholds, side="left")
    return (true_accepts + true_rejects) / len(s)


def best_threshold(scores: Any, same: Any) -> tuple[float, float]:
    """Threshold that maximises pair accuracy under the rule ``score >= threshold`` = "same".

    Candidates are the midpoints between consecutive distinct scores plus the extremes
    ``min - 1`` (accept all) and ``max + 1`` (reject all); ties go to the lowest threshold.

    Returns:
        ``(threshold, accuracy)``.
    """
    s, y = _scores_and_labels(scores, same)
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    acc = _accuracy_at(s, y, candidates)
    best = int(np.argmax(acc))
    return float(candidates[best]), float(acc[best])


def _full_roc(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a verification problem (every threshold kept); needs both classes."""
    if y.all() or not y.any():
        raise ValueError(
            "same: expected both matched and mismatched pairs, "
            f"got {int(y.sum())} matched of {len(y)}"
        )
    return roc_curve(y, s, drop_intermediate=False)


def equal_error_rate(scores: Any, same: Any) -> tuple[float, float]:
    """Equal error rate, where false accept rate = false reject rate, and its threshold.

    The EER is interpolated linearly between the two ROC points where FRR - FAR changes sign;
    the threshold returned is that of the first ROC point with FAR >= FRR.
    """
    s, y = _scores_and_labels(scores, same)
    fpr, tpr, thr = _full_roc(s, y)
    gap = (1.0 - tpr) - fpr  # FRR - FAR: +1 at the strictest threshold, -1 at the loosest
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i]), float(thr[i])
    frac = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + frac * (fpr[i] - fpr[i - 1])
    return float(eer), float(thr[i])


def tar_at_far(scores: Any, same: Any, far: float) -> float:
    """True accept rate at the loosest threshold whose false accept rate is still <= ``far``.

    No interpolation: with M mismatched pairs, FAR moves in steps of 1/M, so a ``far`` below
    1/M means FAR = 0 (only scores above every mismatched score are accepted).
    """
    s, y = _scores_and_labels(scores, same)
    fpr, tpr, _ = _full_roc(s, y)
    # tpr is non-decreasing along the curve, so the last admissible point has the highest TAR.
    return float(tpr[fpr <= far].max())


def _lfw_order_fold_ids(y: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold ids for pairs given as all matched first, then all mismatched (else raise)."""
    num_matched = int(y.sum())
    if not (y[:num_matched].all() and not y[num_matched:].any()):
        raise ValueError(
            "same: without fold_ids the pairs must be in LFW order (all matched pairs, then all "
            f"mismatched); the first mismatched pair is at index {int(np.argmin(y))} but "
            f"{num_matched} pairs are matched; pass fold_ids"
        )
    return lfw_fold_ids(num_matched, len(y) - num_matched, n_folds)


def verification_metrics(
    scores: Any, same: Any, n_folds: int = 10, fold_ids: Any | None = None
) -> dict[str, float]:
    """Pair verification metrics with the LFW k-fold protocol.

    Args:
        scores: (N,) similarities, higher = more likely the same person (pass -distance).
        same: (N,) bool, True for a matched pair.
        n_folds: folds when ``fold_ids`` is None (see :func:`lfw_fold_ids`).
        fold_ids: (N,) fold index per pair; if None the pairs must be N matched then N
            mismatched, as listed in an LFW ``pairs.txt``.

    Returns:
        ``pair_acc`` (mean over folds of the held-out accuracy at the threshold that maximises
        accuracy on the other folds), ``pair_acc_std`` (population std over folds), ``auc``,
        ``eer``, ``tar_at_far_1e-2``, ``tar_at_far_1e-3``, ``threshold`` (best-accuracy
        threshold on all pairs) and ``num_samples``.
    """
    s, y = _scores_and_labels(scores, same)
    if fold_ids is None:
        folds = _lfw_order_fold_ids(y, n_folds)
    else:
        folds = _vector(fold_ids, "fold_ids", dtype=np.int64)
        _same_length(scores=s, fold_ids=folds)
    fold_values = np.unique(folds)
    if len(fold_values) < 2:
        raise ValueError(f"fold_ids: expected at least 2 folds, got {fold_values.tolist()}")
    _full_roc(s, y)  # fail early, with a clear message, when one class is missing

    fold_acc = []
    for k in fold_values:
        held_out = folds == k
        threshold, _ = best_threshold(s[~held_out], y[~held_out])
        fold_acc.append(float(np.mean((s[held_out] >= threshold) == y[held_out])))

    return {
        "pair_acc": float(np.mean(fold_acc)),
        "pair_acc_std": float(np.std(fold_acc)),
        "auc": binary_auc(s, y),
        "eer": equal_error_rate(s, y)[0],
        "tar_at_far_1e-2": tar_at_far(s, y, 1e-2),
        "tar_at_far_1e-3": tar_at_far(s, y, 1e-3),
        "threshold": best_threshold(s, y)[0],
        "num_samples": len(s),
    }


def enrolled_classifier_accuracy(
    embeddings: Any, labels: Any, enroll_fraction: float = 0.5, seed: int = 0
) -> dict[str, float]:
    """Closed-set identification from embeddings, as the original project did with an SVM.

    Each identity's images are split (seeded) into an enrolled part (``enroll_fraction``, at
    least one image) and probes (at least one image); identities with a single image are left
    out. A linear SVM and a 1-nearest-neighbour classifier (cosine) are fit on the enrolled
    embeddings and scored on the probes.

    Returns:
        ``svm_acc``, ``knn_acc`` and ``num_probes``; empty when no identity has two images.
    """
    x = _to_numpy(embeddings, "embeddings").astype(np.float64)
    y = _vector(labels, "labels", dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected shape (N, D), got {x.shape}")
    _same_length(embeddings=x, labels=y)
    rng = np.random.default_rng(seed)
    enrolled, probes = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) < 2:
            continue
        cut = min(len(members) - 1, max(1, round(len(members) * enroll_fraction)))
        enrolled.extend(members[:cut])
        probes.extend(members[cut:])
    if not probes or len(np.unique(y[enrolled])) < 2:
        return {}
    return classifier_accuracy(x[enrolled], y[enrolled], x[probes], y[probes])


def classifier_accuracy(enrolled: Any, enrolled_labels: Any, probes: Any, probe_labels: Any) -> dict[str, float]:
    """Accuracy of a linear SVM and of a cosine 1-nearest-neighbour classifier on embeddings.

    Both are fitted on enrolled embeddings (N, D) and scored on probe embeddings (M, D); labels
    may be ints or names.

    Returns:
        ``svm_acc``, ``knn_acc`` and ``num_probes``.
    """
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    x, y = _to_numpy(enrolled, "enrolled").astype(np.float64), np.asarray(enrolled_labels)
    px, py = _to_numpy(probes, "probes").astype(np.float64), np.asarray(probe_labels)
    _same_length(enrolled=x, enrolled_labels=y)
    _same_length(probes=px, probe_labels=py)
    if len(np.unique(y)) < 2:
        raise ValueError(f"enrolled_labels: a classifier needs at least 2 people, got {len(np.unique(y))}")
    svm = LinearSVC(C=1.0).fit(x, y)
    knn = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(x, y)
    return {
        "svm_acc": float(np.mean(svm.predict(px) == py)),
        "knn_acc": float(np.mean(knn.predict(px) == py)),
        "num_probes": len(py),
    }


# --------------------------------------------------------------------------------------------
# open-set identification (gallery): each probe has its best gallery match and score
# --------------------------------------------------------------------------------------------


def _id_list(ids: Any, name: str) -> list[Any]:
    """Identities as a plain list (ints, strings or None), from a list, array or tensor."""
    if hasattr(ids, "detach"):
        return _to_numpy(ids, name).tolist()
    return list(ids)


def _open_set_inputs(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (scores, correctly identified, unknown) arrays for the probes."""
    s = _vector(probe_best_scores, "probe_best_scores")
    pred = _id_list(probe_pred_ids, "probe_pred_ids")
    true = _id_list(probe_true_ids, "probe_true_ids")
    if not len(s) == len(pred) == len(true):
        raise ValueError(
            "expected one score, predicted id and true id per probe, "
            f"got {len(s)} scores, {len(pred)} predicted ids, {len(true)} true ids"
        )
    # Unknown: None or -1 (a string id "-1" is a name, not the marker).
    unknown = np.array(
        [t is None or (not isinstance(t, str) and t == -1) for t in true], dtype=bool
    )
    correct = np.array(
        [not u and p == t for p, t, u in zip(pred, true, unknown, strict=True)], dtype=bool
    )
    return s, correct, unknown


def fpir_threshold(unknown_scores: Any, fpir: float) -> float:
    """The lowest threshold at which at most ``fpir`` of the unknown probes are accepted.

    The rule is ``score >= threshold`` accepts.
    """
    u = np.sort(_vector(unknown_scores, "unknown_scores"))[::-1]
    if len(u) == 0:
        raise ValueError("unknown_scores: expected at least one unknown probe, got none")
    allowed = math.floor(fpir * len(u) + 1e-9)  # false accepts allowed
    if allowed >= len(u):
        return float(u[-1])
    # Just above the (allowed+1)-th highest unknown score; ties there are rejected as well.
    return float(np.nextafter(u[allowed], np.inf))


def open_set_metrics(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any, threshold: float
) -> dict[str, float]:
    """Open-set identification at a fixed acceptance threshold (``score >= threshold`` accepts).

    Args:
        probe_best_scores: (N,) similarity of each probe to its best gallery identity.
        probe_pred_ids: (N,) that best identity.
        probe_true_ids: (N,) the true identity; None or -1 for a person not in the gallery.
        threshold: acceptance threshold.

    Returns:
        ``identification_rate`` (known probes accepted with the right identity),
        ``unknown_rejection_rate`` (unknown probes rejected), ``false_positive_identification_rate``
        (unknown probes accepted), ``num_known``, ``num_unknown``, ``num_samples``. Rates over an
        empty group are NaN.
    """
    s, correct, unknown = _open_set_inputs(probe_best_scores, probe_pred_ids, probe_true_ids)
    accepted = s >= threshold
    known = ~unknown
    return {
        "identification_rate": _share(correct & accepted, known),
        "unknown_rejection_rate": _share(~accepted, unknown),
        "false_positive_identification_rate": _share(accepted, unknown),
        "num_known": int(known.sum()),
        "num_unknown": int(unknown.sum()),
        "num_samples": len(s),
    }


def _share(hits: np.ndarray, among: np.ndarray) -> float:
    """Share of True in ``hits`` over the samples where ``among`` is True; NaN if none."""
    return float(np.mean(hits[among])) if among.any() else float("nan")


def dir_at_fpir(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any, fpir: float
) -> float:
    """Detection and identification rate at a false positive identification rate.

    The threshold is :func:`fpir_threshold` of the unknown probes' scores; DIR is the share of
    known probes accepted at it with the right identity.
    """
    s, correct, unknown = _open_set_inputs(probe_best_scores, probe_pred_ids, probe_true_ids)
    if unknown.all():
        raise ValueError("probe_true_ids: expected at least one known probe, got only unknown ones")
    threshold = fpir_threshold(s[unknown], fpir)
    known = ~unknown
    return float(np.mean(correct[known] & (s[known] >= threshold)))


# --------------------------------------------------------------------------------------------
# detection (one face box per image, xyxy pixels)
# --------------------------------------------------------------------------------------------


def _boxes(x: Any, name: str) -> np.ndarray:
    """Return an (N, 4) float array of xyxy boxes, or raise naming the argument."""
    b = _to_numpy(x, name).astype(np.float64, copy=False)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(
            f"Expected {name} to be an array of shape [N, 4] (x1, y1, x2, y2), got {b.shape}"
        )
    return b


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable (..., 4) xyxy box arrays; 0 where the union is empty."""
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(boxes1: Any, boxes2: Any) -> np.ndarray:
    """(N, M) intersection over union of xyxy boxes; 0 where the union is empty."""
    return _iou(_boxes(boxes1, "boxes1")[:, None, :], _boxes(boxes2, "boxes2")[None, :, :])


def paired_iou(pred: Any, gt: Any) -> np.ndarray:
    """(N,) IoU of ``pred[i]`` with ``gt[i]``."""
    p = _boxes(pred, "pred")
    g = _boxes(gt, "gt")
    _same_length(pred=p, gt=g)
    return _iou(p, g)


def average_precision_single(scores: Any, is_tp: Any, num_gt: int) -> float:
    """VOC all-point interpolated average precision for detections ranked by score.

    Args:
        scores: (D,) detection confidences.
        is_tp: (D,) True where a detection matches a not yet matched ground truth box.
        num_gt: number of ground truth boxes.

    Returns:
        The area under the precision envelope (max precision at recall >= r); NaN if
        ``num_gt`` is 0.
    """
    s = _vector(scores, "scores")
    tp = _vector(is_tp, "is_tp", dtype=bool)
    _same_length(scores=s, is_tp=tp)
    if num_gt <= 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    tp_cum = np.cumsum(tp[order])
    fp_cum = np.cumsum(~tp[order])
    recall = np.concatenate([[0.0], tp_cum / num_gt, [1.0]])
    precision = np.concatenate([[0.0], tp_cum / np.maximum(tp_cum + fp_cum, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # envelope from the right
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def detection_summary(
    pred_boxes: Any,
    pred_scores: Any,
    gt_boxes: Any,
    gt_has_face: Any,
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics of a single-face detector: one predicted box and face score per image.

    Args:
        pred_boxes: (N, 4) predicted xyxy box per image.
        pred_scores: (N,) predicted probability that the image holds a face.
        gt_boxes: (N, 4) true box per image (ignored where ``gt_has_face`` is False).
        gt_has_face: (N,) bool.
        score_threshold: a score >= this predicts "face".

    Returns:
        ``cls_acc`` (face / no face), ``mean_iou`` and ``iou50_rate`` (over face images, a
        predicted "no face" counting as IoU 0), ``ap50`` (VOC AP at IoU 0.5 over every image's
        prediction ranked by score; a prediction on a face-less image is a false positive),
        ``num_samples``.
    """
    p = _boxes(pred_boxes, "pred_boxes")
    g = _boxes(gt_boxes, "gt_boxes")
    s = _vector(pred_scores, "pred_scores")
    has_face = _vector(gt_has_face, "gt_has_face", dtype=bool)
    n = _same_length(pred_boxes=p, pred_scores=s, gt_boxes=g, gt_has_face=has_face)
    if n == 0:
        raise ValueError("expected at least one image, got none")

    predicted_face = s >= score_threshold
    iou = np.where(has_face, paired_iou(p, np.nan_to_num(g)), 0.0)
    hit_iou = np.where(predicted_face, iou, 0.0)[has_face]
    nan = float("nan")
    return {
        "cls_acc": float(np.mean(predicted_face == has_face)),
        "mean_iou": float(hit_iou.mean()) if has_face.any() else nan,
        "iou50_rate": float(np.mean(hit_iou >= 0.5)) if has_face.any() else nan,
        "ap50": average_precision_single(s, has_face & (iou >= 0.5), int(has_face.sum())),
        "num_samples": int(n),
    }


# --------------------------------------------------------------------------------------------
# Multi-face recognition: every face of a picture found and named
# --------------------------------------------------------------------------------------------


def recognition_metrics(
    truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], iou: float = 0.4, unknown: str = "unknown"
) -> dict[str, Any]:
    """Score recognised faces against the faces really there, picture by picture.

    Each picture's detections are matched one to one to its true faces, greedily from the
    highest IoU down, when the IoU is at least ``iou`` (detectors draw faces at different sizes,
    so the bar is below the usual 0.5).

    Args:
        truth: Rows with ``key`` (the picture), ``box`` (x1, y1, x2, y2), ``name`` and ``enrolled`` (bool).
        found: Rows with ``key``, ``box`` and ``name`` (``unknown`` for a rejected face).
        iou: Least IoU of a match.
        unknown: The name of a rejected face.

    Returns:
        ``detection_rate`` (true faces found), ``identification_rate`` (enrolled faces found and
        named right, of all enrolled faces), ``identification_rate_of_found`` (of the enrolled
        faces found), ``stranger_rejection_rate`` (strangers found and answered ``unknown``, of
        the strangers found), ``false_accepts`` (strangers given a name), ``misidentified``
        (enrolled faces given another's name), ``enrolled_rejected`` (enrolled faces answered
        ``unknown``), ``extra_detections`` (detections of no true face) and how many of those got
        a name (``extra_named``), and the counts ``faces``, ``enrolled_faces``, ``stranger_faces``,
        ``detections``, ``pictures``.
    """
    by_key: dict[Any, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for row in truth:
        by_key.setdefault(row["key"], ([], []))[0].append(row)
    extra = extra_named = 0
    for row in found:
        if row["key"] not in by_key:  # a picture without true faces: every detection is extra
            extra += 1
            extra_named += row["name"] != unknown
            continue
        by_key[row["key"]][1].append(row)
    counts = {"found_enrolled": 0, "found_strangers": 0, "correct": 0, "rejected_strangers": 0, "misidentified": 0,
              "enrolled_rejected": 0, "false_accepts": 0, "found": 0}  # fmt: skip
    for faces, detections in by_key.values():
        matched_truth: set[int] = set()
        matched_found: set[int] = set()
        if faces and detections:
            overlap = box_iou([d["box"] for d in detections], [f["box"] for f in faces])
            for flat in np.argsort(-overlap, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(faces))
                if overlap[i, j] < iou:
                    break
                if i in matched_found or j in matched_truth:
                    continue
                matched_found.add(i)
                matched_truth.add(j)
                face, name = faces[j], detections[i]["name"]
                counts["found"] += 1
                if face["enrolled"]:
                    counts["found_enrolled"] += 1
                    counts["correct"] += name == face["name"]
                    counts["enrolled_rejected"] += name == unknown
                    counts["misidentified"] += name not in (unknown, face["name"])
                else:
                    counts["found_strangers"] += 1
                    counts["rejected_strangers"] += name == unknown
                    counts["false_accepts"] += name != unknown
        for i, detection in enumerate(detections):
            if i not in matched_found:
                extra += 1
                extra_named += detection["name"] != unknown
    enrolled_faces = sum(bool(row["enrolled"]) for row in truth)
    stranger_faces = len(truth) - enrolled_faces

    def rate(part: int, whole: int) -> float:
        return float(part / whole) if whole else float("nan")

    return {
        "detection_rate": rate(counts["found"], len(truth)),
        "identification_rate": rate(counts["correct"], enrolled_faces),
        "identification_rate_of_found": rate(counts["correct"], counts["found_enrolled"]),
        "stranger_rejection_rate": rate(counts["rejected_strangers"], counts["found_strangers"]),
        "false_accepts": counts["false_accepts"],
        "misidentified": counts["misidentified"],
        "enrolled_rejected": counts["enrolled_rejected"],
        "extra_detections": extra,
        "extra_named": extra_named,
        "faces": len(truth),
        "enrolled_faces": enrolled_faces,
        "stranger_faces": stranger_faces,
        "detections": len(found),
        "pictures": len({row["key"] for row in truth} | {row["key"] for row in found}),
    }
