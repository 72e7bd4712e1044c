"""Verification of pairs: scores are similarities, higher means "same"; LFW folds, EER, TAR@FAR.

Also the closed-set classifiers fitted on enrolled embeddings (a linear SVM and 1-NN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from facetorch.evaluation._arrays import _same_length, _scores_and_labels, _to_numpy, _vector
from facetorch.evaluation.classification import binary_auc


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
