"""Tests for facetorch.evaluation: hand-checked examples and cross-checks with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import label_binarize

from facetorch.evaluation import (
    accuracy,
    average_precision_single,
    best_threshold,
    binary_auc,
    box_iou,
    detection_summary,
    dir_at_fpir,
    equal_error_rate,
    fpir_threshold,
    lfw_fold_ids,
    open_set_metrics,
    paired_iou,
    roc_curves,
    tar_at_far,
    top_k_accuracy,
    verification_metrics,
)

VERIFICATION_KEYS = {
    "pair_acc",
    "pair_acc_std",
    "auc",
    "eer",
    "tar_at_far_1e-2",
    "tar_at_far_1e-3",
    "threshold",
    "num_samples",
}

# 4 matched then 4 mismatched pairs. With 2 folds, fold 0 = matched[:2] + mismatched[:2].
TOY_MATCHED = [0.9, 0.8, 0.6, 0.3]
TOY_MISMATCHED = [0.1, 0.7, 0.2, 0.4]
TOY_SCORES = np.array(TOY_MATCHED + TOY_MISMATCHED)
TOY_SAME = np.array([True] * 4 + [False] * 4)


def _random_probs(
    rng: np.random.Generator, n: int, c: int, decimals: int | None = None
) -> np.ndarray:
    logits = rng.normal(size=(n, c))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs if decimals is None else probs.round(decimals)


# ------------------------------------------------------------------------------ classification


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many tied scores, vertical ROC steps
def test_roc_micro_macro_match_sklearn(decimals: int | None) -> None:
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, 200, 4, decimals)
    targets = rng.integers(0, 4, size=200)
    curves = roc_curves(probs, targets, class_names=["a", "b", "c", "d"])

    assert set(curves) == {"a", "b", "c", "d", "micro", "macro"}
    for c, name in enumerate("abcd"):
        assert curves[name].auc == pytest.approx(roc_auc_score(targets == c, probs[:, c]))
    onehot = label_binarize(targets, classes=range(4))
    assert curves["macro"].auc == pytest.approx(roc_auc_score(onehot, probs, average="macro"))
    if decimals is None:  # multi_class="ovr" insists on rows that sum to 1
        expected = roc_auc_score(targets, probs, multi_class="ovr", average="macro")
        assert curves["macro"].auc == pytest.approx(expected)
    assert curves["micro"].auc == pytest.approx(roc_auc_score(onehot, probs, average="micro"))
    macro = curves["macro"]
    assert macro.fpr[0] == 0 and macro.fpr[-1] == 1 and macro.tpr[-1] == pytest.approx(1)
    assert np.all(np.diff(macro.fpr) >= 0) and np.all(np.diff(macro.tpr) >= -1e-12)


def test_roc_skips_absent_class_and_accepts_tensors() -> None:
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, 60, 3)
    targets = rng.integers(0, 2, size=60)  # class 2 never occurs
    curves = roc_curves(torch.from_numpy(probs), torch.from_numpy(targets))
    assert set(curves) == {"0", "1", "micro", "macro"}
    expected_macro = np.mean([roc_auc_score(targets == c, probs[:, c]) for c in (0, 1)])
    assert curves["macro"].auc == pytest.approx(expected_macro)


def test_roc_binary() -> None:
    rng = np.random.default_rng(2)
    p1 = rng.random(50)
    targets = (p1 + rng.normal(scale=0.3, size=50) > 0.5).astype(int)
    curves = roc_curves(np.stack([1 - p1, p1], axis=1), targets, class_names=["non_face", "face"])
    assert curves["face"].auc == pytest.approx(roc_auc_score(targets, p1))
    assert curves["non_face"].auc == pytest.approx(roc_auc_score(targets, p1))
    assert roc_curves(p1, targets)["1"].auc == pytest.approx(curves["face"].auc)  # (N,) shortcut


def test_roc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="class indices"):
        roc_curves(np.full((3, 2), 0.5), [0, 1, 2])
    with pytest.raises(ValueError, match="class_names"):
        roc_curves(np.full((3, 2), 0.5), [0, 1, 1], class_names=["x"])


def test_accuracy_top_k_binary_auc() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.25, 0.45, 0.3], [0.6, 0.3, 0.1]])
    targets = np.array([0, 1, 2, 2])
    assert accuracy(probs, targets) == pytest.approx(1 / 4)
    assert accuracy(np.array([0, 1, 2, 0]), targets) == pytest.approx(3 / 4)
    assert top_k_accuracy(probs, targets, k=1) == pytest.approx(1 / 4)
    assert top_k_accuracy(probs, targets, k=2) == pytest.approx(3 / 4)
    assert top_k_accuracy(probs, targets, k=5) == 1.0
    assert binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert np.isnan(binary_auc([0.1, 0.2], [1, 1]))


# ------------------------------------------------------------------------------ verification


def test_lfw_fold_ids_contiguous_chunks() -> None:
    ids = lfw_fold_ids(10, 10, n_folds=10)
    assert ids.tolist() == list(range(10)) * 2
    ids = lfw_fold_ids(5, 4, n_folds=2)
    assert ids.tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="n_folds"):
        lfw_fold_ids(3, 3, n_folds=4)


def test_best_threshold_hand_example() -> None:
    # Candidates 0.15, 0.25, ..., accuracy 6/8 is reached at 0.25, 0.5 and 0.75: lowest wins.
    threshold, acc = best_threshold(TOY_SCORES, TOY_SAME)
    assert threshold == pytest.approx(0.25)
    assert acc == pytest.approx(6 / 8)
    # All same: accepting everything (a threshold below the lowest score) is perfect.
    threshold, acc = best_threshold([0.2, 0.5], [True, True])
    assert threshold < 0.2 and acc == 1.0


def test_best_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=101).round(1)  # ties on purpose
    same = rng.random(101) < 0.5
    threshold, acc = best_threshold(scores, same)
    brute = max(np.mean((scores >= t) == same) for t in np.r_[scores, scores.max() + 1])
    assert acc == pytest.approx(brute)
    assert np.mean((scores >= threshold) == same) == pytest.approx(acc)


def test_eer_and_tar_at_far_hand_example() -> None:
    # ROC points (FAR, TAR) going down in threshold: (0,0) .9 (0,.25) .8 (0,.5) .7 (.25,.5)
    # .6 (.25,.75) .4 (.5,.75) .3 (.5,1) .2 (.75,1) .1 (1,1): FAR = FRR = 0.25 at 0.6.
    eer, threshold = equal_error_rate(TOY_SCORES, TOY_SAME)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)
    assert tar_at_far(TOY_SCORES, TOY_SAME, 1e-2) == pytest.approx(0.5)
    assert tar_at_far(TOY_SCORES, TOY_SAME, 0.25) == pytest.approx(0.75)
    assert tar_at_far(TOY_SCORES, TOY_SAME, 0.49) == pytest.approx(0.75)
    assert tar_at_far(TOY_SCORES, TOY_SAME, 0.5) == pytest.approx(1.0)


def test_eer_interpolates_between_roc_points() -> None:
    # A tie between a matched and a mismatched score gives a diagonal ROC segment from
    # (FAR, FRR) = (0, 1/2) to (1/2, 0): the rates cross halfway, at 1/4.
    eer, _ = equal_error_rate([3.0, 1.0, 1.0, 0.0], [True, True, False, False])
    assert eer == pytest.approx(0.25)
    eer, _ = equal_error_rate([2.0, 3.0, 0.0, 1.0], [True, True, False, False])
    assert eer == 0.0


def test_verification_two_folds_hand_example() -> None:
    # Test fold 0, threshold from fold 1 (.6 .3 | .2 .4): 0.25 -> fold 0 (.9 .8 | .1 .7): 3/4.
    # Test fold 1, threshold from fold 0: 0.75 -> fold 1: both matched rejected: 2/4.
    metrics = verification_metrics(TOY_SCORES, TOY_SAME, n_folds=2)
    assert set(metrics) == VERIFICATION_KEYS
    assert metrics["pair_acc"] == pytest.approx(0.625)
    assert metrics["pair_acc_std"] == pytest.approx(0.125)
    assert metrics["threshold"] == pytest.approx(0.25)
    assert metrics["auc"] == pytest.approx(13 / 16)
    assert metrics["eer"] == pytest.approx(0.25)
    assert metrics["tar_at_far_1e-2"] == pytest.approx(0.5)
    assert metrics["tar_at_far_1e-3"] == pytest.approx(0.5)
    assert metrics["num_samples"] == 8


def test_verification_ten_folds_of_twenty_pairs() -> None:
    # Fold i holds matched pair i and mismatched pair i. Matched scores 2..11 (index + 2),
    # mismatched 0.5, except mismatched pair 3 at 20, above every matched score.
    matched = np.arange(2.0, 12.0)
    mismatched = np.full(10, 0.5)
    mismatched[3] = 20.0
    scores = np.r_[matched, mismatched]
    same = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    metrics = verification_metrics(scores, same)
    # Every fold's best training threshold lies between 0.5 and its lowest matched score
    # (accepting the outlier costs 1 error, rejecting matched pairs more), so each held-out
    # fold is right except fold 3, whose outlier is accepted (1/2).
    assert metrics["pair_acc"] == pytest.approx(0.95)
    assert metrics["pair_acc_std"] == pytest.approx(0.15)
    assert metrics["tar_at_far_1e-2"] == 0.0  # FAR steps are 1/10: only FAR 0 is allowed
    assert metrics["auc"] == pytest.approx(0.9)

    # Explicit fold ids give the same numbers, in any order.
    order = np.random.default_rng(0).permutation(20)
    folds = lfw_fold_ids(10, 10)
    shuffled = verification_metrics(torch.tensor(scores[order]), same[order], fold_ids=folds[order])
    assert shuffled == pytest.approx(metrics)


def test_verification_needs_lfw_order_or_fold_ids() -> None:
    with pytest.raises(ValueError, match="fold_ids"):
        verification_metrics(np.arange(4.0), [True, False, True, False], n_folds=2)
    with pytest.raises(ValueError, match="both matched and mismatched"):
        verification_metrics(np.arange(4.0), [True] * 4, fold_ids=[0, 0, 1, 1])


# ------------------------------------------------------------------------------ open set


def test_open_set_hand_example() -> None:
    scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.6]
    pred = [1, 2, 3, 1, 2, 3]
    true = [1, 1, 3, None, -1, None]
    metrics = open_set_metrics(scores, pred, true, threshold=0.5)
    # Known: probe 0 right and accepted, probe 1 wrong, probe 2 right but rejected.
    assert metrics["identification_rate"] == pytest.approx(1 / 3)
    # Unknown scores .7, .3, .6: only .3 is rejected.
    assert metrics["unknown_rejection_rate"] == pytest.approx(1 / 3)
    assert metrics["num_known"] == 3 and metrics["num_unknown"] == 3

    assert fpir_threshold([0.7, 0.3, 0.6], 0.0) > 0.7
    assert dir_at_fpir(scores, pred, true, fpir=0.0) == pytest.approx(1 / 3)
    assert dir_at_fpir(scores, pred, true, fpir=1 / 3) == pytest.approx(1 / 3)
    assert dir_at_fpir(scores, pred, true, fpir=1.0) == pytest.approx(2 / 3)


def test_open_set_string_ids() -> None:
    metrics = open_set_metrics([0.9, 0.2], ["ann", "bob"], ["ann", None], threshold=0.5)
    assert metrics["identification_rate"] == 1.0
    assert metrics["unknown_rejection_rate"] == 1.0


# ------------------------------------------------------------------------------ detection


def test_box_iou_hand_values_and_torchvision() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], dtype=float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1 / 7, 1.0, 0.0])
    np.testing.assert_allclose(iou[1], 0.0)  # an empty box overlaps nothing (no 0/0)

    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    xy = rng.random((6, 2)) * 10
    boxes = np.c_[xy, xy + rng.random((6, 2)) * 5 + 0.1]
    expected = torchvision.ops.box_iou(
        torch.tensor(boxes), torch.tensor(boxes[::-1].copy())
    ).numpy()
    np.testing.assert_allclose(box_iou(torch.tensor(boxes), boxes[::-1]), expected, rtol=1e-6)
    np.testing.assert_allclose(paired_iou(boxes, boxes[::-1]), np.diag(expected), rtol=1e-6)


def test_box_iou_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        box_iou(np.zeros((2, 3)), np.zeros((1, 4)))


def test_average_precision_hand_example() -> None:
    # Ranked TP, FP, FP, TP with 3 ground truths: precision 1, 1/2, 1/3, 1/2 at recall
    # 1/3, 1/3, 1/3, 2/3; envelope 1 up to recall 1/3, then 1/2: AP = 1/3 + 1/3 * 1/2.
    ap = average_precision_single([0.9, 0.8, 0.7, 0.6], [True, False, False, True], num_gt=3)
    assert ap == pytest.approx(0.5)
    assert average_precision_single([0.3, 0.2], [True, True], num_gt=2) == pytest.approx(1.0)
    assert average_precision_single([0.3, 0.2], [False, False], num_gt=2) == 0.0
    assert average_precision_single([0.3, 0.9], [True, False], num_gt=1) == pytest.approx(0.5)


def test_detection_summary_hand_example() -> None:
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    pred = np.array([[0, 0, 10, 8], [0, 0, 5, 5], [0, 0, 10, 3], [0, 0, 10, 6]], dtype=float)
    has_face = np.array([True, False, True, True])  # image 1 has no face
    scores = np.array([0.9, 0.8, 0.4, 0.6])  # image 2 is a miss (0.4 < 0.5)
    # IoUs with gt: 0.8, -, 0.3, 0.6. Ranked: TP (0.9), FP (no face), TP (0.6), FP (0.4, IoU .3):
    # precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 + 1/3 * 2/3 = 5/9.
    summary = detection_summary(pred, scores, gt, has_face)
    assert summary == pytest.approx(
        {
            "cls_acc": 0.5,
            "mean_iou": (0.8 + 0.0 + 0.6) / 3,
            "iou50_rate": 2 / 3,
            "ap50": 5 / 9,
            "num_samples": 4,
        }
    )
    # A NaN box for the face-less image is fine.
    gt[1] = np.nan
    assert detection_summary(torch.tensor(pred), torch.tensor(scores), gt, has_face)[
        "ap50"
    ] == pytest.approx(5 / 9)
