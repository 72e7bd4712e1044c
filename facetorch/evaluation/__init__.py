"""Evaluation metrics as pure functions on arrays, split by what is measured.

:mod:`~facetorch.evaluation.classification` (ROC, AUC, accuracy), :mod:`~facetorch.evaluation.verification`
(pairs: folds, EER, TAR@FAR), :mod:`~facetorch.evaluation.open_set` (a gallery's strangers),
:mod:`~facetorch.evaluation.detection` (IoU, AP) and :mod:`~facetorch.evaluation.recognition`
(every face of a picture). Every function accepts numpy arrays, lists or torch tensors (converted
with ``.detach().cpu()``) and returns plain Python floats or numpy arrays, so results go straight
into ``metrics.json``. Nothing here imports Lightning (or torch itself). The names below are the
package's public ones.
"""

from facetorch.boxes import box_iou, paired_iou
from facetorch.evaluation.classification import RocCurve, accuracy, binary_auc, roc_curves, top_k_accuracy
from facetorch.evaluation.detection import average_precision_single, detection_summary
from facetorch.evaluation.open_set import dir_at_fpir, fpir_threshold, open_set_metrics
from facetorch.evaluation.recognition import recognition_metrics
from facetorch.evaluation.verification import (
    best_threshold,
    classifier_accuracy,
    enrolled_classifier_accuracy,
    equal_error_rate,
    lfw_fold_ids,
    tar_at_far,
    verification_metrics,
)

__all__ = [
    "RocCurve",
    "accuracy",
    "average_precision_single",
    "best_threshold",
    "binary_auc",
    "box_iou",
    "classifier_accuracy",
    "detection_summary",
    "dir_at_fpir",
    "enrolled_classifier_accuracy",
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
