"""Detection of one face box per image (xyxy pixels): classification accuracy, IoU, AP50."""

from __future__ import annotations

from typing import Any

import numpy as np

from facetorch.boxes import as_boxes, paired_iou
from facetorch.evaluation._arrays import _same_length, _vector


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
    p = as_boxes(pred_boxes, "pred_boxes")
    g = as_boxes(gt_boxes, "gt_boxes")
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
