"""Classical baselines fitted and scored on exactly the splits a FaceDataModule gives a model.

Each baseline is fitted on the train and val splits (classical methods need no validation set,
so they get all the non-test data: a conservative comparison) and scored on the test split, with
the same flat metric keys as the deep models (``acc``, ``auc``, ``top5_acc``, ``num_samples``;
for the ``labelme`` layout the detector's ``cls_acc``, ``mean_iou``, ``iou50_rate``, ``ap50``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import cv2
import numpy as np

from facetorch import evaluation, io
from facetorch.baselines.classical import (
    EigenfaceEmbedder,
    EigenfacesSvm,
    HogSvmClassifier,
    LbpNearestNeighbour,
    chi_square_distances,
)
from facetorch.data.datamodule import FaceDataModule
from facetorch.data.datasets import SampleIndex, to_uint8
from facetorch.data.detection import BoxIndex
from facetorch.data.haar import HaarFaceDetector
from facetorch.data.images import read_image
from facetorch.data.transforms import CenterCropFraction

Method = Literal["hog_svm", "haar", "eigenfaces_svm", "lbp_nn", "mean_box"]
METHODS_BY_LAYOUT: dict[str, tuple[str, ...]] = {
    "face_crops": ("hog_svm", "haar"),
    "identity_folders": ("eigenfaces_svm", "lbp_nn"),
    "labelme": ("haar", "mean_box"),
}


def load_grey(index: SampleIndex, progress: bool = True) -> list[np.ndarray]:
    """Every image of a split as greyscale uint8 (H, W), at its own size (with a progress bar on a terminal)."""
    sources = io.progress(index.sources, "read", total=len(index), enabled=progress)
    return [to_uint8(s, 1) if isinstance(s, np.ndarray) else read_image(s, 1) for s in sources]


class HaarCropClassifier:
    """OpenCV's Haar cascade as a face / non-face classifier: a crop is a face when it finds one in it.

    Crops are enlarged to ``min_side`` and given a border first, since the cascade needs a face of
    at least its window size with some context around it.
    """

    def __init__(self, min_side: int = 96, border: float = 0.2, min_neighbors: int = 3) -> None:
        self.detector = HaarFaceDetector(min_neighbors=min_neighbors, min_size=(24, 24))
        self.min_side = min_side
        self.border = border

    def fit(self, images: Any, labels: Any) -> HaarCropClassifier:
        return self  # nothing to learn

    def decision_function(self, images: list[np.ndarray]) -> np.ndarray:
        scores = []
        for image in io.progress(images, "haar"):
            scale = max(1.0, self.min_side / min(image.shape[:2]))
            big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            pad = int(self.border * max(big.shape[:2]))
            big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            scores.append(float(len(self.detector.detect(big)) > 0))
        return np.asarray(scores)


def _held_out(data: FaceDataModule, root: str) -> SampleIndex:
    """Every image of ``root`` (the data's layout), labelled with the training data's class order."""
    return data.layout_spec.scan(Path(root), 1, data.class_names)


def _builders(data: FaceDataModule) -> dict[str, Callable[[], Any]]:
    # Baselines see the same input size as the model (e.g. 120x80 crops).
    size = tuple(data.image_size)
    return {
        "hog_svm": lambda: HogSvmClassifier(size=(min(size[0], 64), min(size[1], 64))),
        "haar": HaarCropClassifier,
        "eigenfaces_svm": lambda: EigenfacesSvm(size=(64, 64)),
        "lbp_nn": lambda: LbpNearestNeighbour(),
    }


def run_baseline(method: Method, data: FaceDataModule, test_root: Optional[str] = None) -> dict[str, Any]:
    """Fit ``method`` on the train + val splits of ``data`` and score it on the test split.

    Args:
        method: The baseline.
        data: Gives the training images and the split (the same as the model's).
        test_root: Score on every image of this folder (same layout) instead of the test split.

    Returns:
        ``{"method", "acc", "auc" (face_crops) or "top5_acc" (identities), "num_samples"}``.
    """
    allowed = METHODS_BY_LAYOUT[data.layout]
    if method not in allowed:
        raise ValueError(f"baseline {method!r} does not apply to layout {data.layout!r}; expected one of {allowed}")
    if data.layout == "labelme":
        return run_detection_baseline(method, data, test_root)
    splits = data.splits
    train_images = load_grey(splits["train"]) + load_grey(splits["val"])
    train_labels = np.asarray(splits["train"].labels + splits["val"].labels)
    test_index = splits["test"] if test_root is None else _held_out(data, test_root)
    test_images, test_labels = load_grey(test_index), np.asarray(test_index.labels)
    model = _builders(data)[method]().fit(train_images, train_labels)
    scores = model.decision_function(test_images)
    report: dict[str, Any] = {"method": method}
    if data.layout == "face_crops":
        scores = scores if scores.ndim == 1 else scores[:, 1]
        threshold = 0.5 if method == "haar" else 0.0
        report["acc"] = evaluation.accuracy((scores > threshold).astype(int), test_labels)
        report["auc"] = evaluation.binary_auc(scores, test_labels == 1)
    else:
        # decision_function columns follow the sorted training labels (the model's classes_).
        columns = np.full((len(test_labels), data.num_classes), -np.inf)
        columns[:, np.asarray(model.classes_)] = scores
        report["acc"] = evaluation.accuracy(columns, test_labels)
        report["top5_acc"] = evaluation.top_k_accuracy(columns, test_labels, k=5)
    report["num_samples"] = int(len(test_labels))
    return report


def largest_haar_boxes(index: SampleIndex, detector: Optional[HaarFaceDetector] = None) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's Haar cascade as a single-face detector: the largest detection per image.

    Returns:
        Boxes (N, 4) normalised to each image's size (zeros where none is found) and scores
        (N,): 1.0 where the cascade found a face, 0.0 where it found none.
    """
    detector = detector or HaarFaceDetector()
    boxes, scores = np.zeros((len(index), 4)), np.zeros(len(index))
    for i, image in enumerate(io.progress(load_grey(index), "haar")):
        found = detector.largest(image)
        if found is not None:
            height, width = image.shape[:2]
            boxes[i], scores[i] = np.asarray(found) / [width, height, width, height], 1.0
    return boxes, scores


def run_detection_baseline(method: Method, data: FaceDataModule, test_root: Optional[str] = None) -> dict[str, Any]:
    """A single-face detection baseline scored like :class:`~facetorch.tasks.FaceDetectorTask`.

    ``haar``: the largest Haar cascade detection per image (nothing to fit). ``mean_box``: always
    "face", at the mean normalised box of the train + val images with a face.

    Returns:
        ``{"method", "cls_acc", "mean_iou", "iou50_rate", "ap50", "num_samples"}``.
    """
    splits = data.splits
    test: BoxIndex = splits["test"] if test_root is None else _held_out(data, test_root)  # type: ignore[assignment]
    if method == "haar":
        boxes, scores = largest_haar_boxes(test)
    elif method == "mean_box":
        seen = np.concatenate([splits["train"].normalized_boxes(), splits["val"].normalized_boxes()])
        labels = np.asarray(splits["train"].labels + splits["val"].labels) == 1
        if not labels.any():
            raise ValueError(f"baseline mean_box needs training images with a face; {data.root} has none outside the test split")
        boxes, scores = np.tile(seen[labels].mean(axis=0), (len(test), 1)), np.ones(len(test))
    else:
        allowed = METHODS_BY_LAYOUT["labelme"]
        raise ValueError(f"baseline {method!r} does not apply to layout 'labelme'; expected one of {allowed}")
    has_face = np.asarray(test.labels) == 1
    return {"method": method, **evaluation.detection_summary(boxes, scores, test.normalized_boxes(), has_face)}


# ----------------------------------------------------------------------------------------------
# Verification baselines (pairs): the classical face embeddings the deep embedding must beat
# ----------------------------------------------------------------------------------------------

VERIFICATION_METHODS = ("eigenfaces", "lbp")


def _cropped_grey(data: FaceDataModule, index: SampleIndex) -> list[np.ndarray]:
    """Greyscale images of a split with the model's centre crop applied (so both see the same face)."""
    images = load_grey(index)
    if data.center_crop is None:
        return images
    crop = CenterCropFraction(data.center_crop)
    return [crop.apply(image) for image in images]


def run_verification_baseline(method: str, data: FaceDataModule, pairs_file: str) -> dict[str, Any]:
    """Verify the pairs of an LFW ``pairs_file`` with a classical embedding.

    ``eigenfaces``: whitened PCA (100 components, 64x64) fitted on the train and val images of
    ``data``; cosine similarity. ``lbp``: uniform LBP histograms on an 8x8 grid (96x96), no
    training; minus the chi-square distance. Both see the model's ``center_crop``.

    Returns:
        ``method`` and the verification keys of :func:`facetorch.evaluation.verification_metrics`.
    """
    if method not in VERIFICATION_METHODS:
        raise ValueError(f"verification baseline must be one of {VERIFICATION_METHODS}, got {method!r}")
    probe = FaceDataModule(**{**data.hparams, "pairs_file": pairs_file, "eval_all": True, "augmentation": None})
    images = _cropped_grey(data, probe.splits["test"])
    pairs, folds = probe.verification_pairs_of("test")
    if method == "eigenfaces":
        train = _cropped_grey(data, data.splits["train"]) + _cropped_grey(data, data.splits["val"])
        embeddings = EigenfaceEmbedder(size=(64, 64)).fit(train).transform(images)
        scores = np.sum(embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]], axis=1)
    else:
        lbp = LbpNearestNeighbour()
        features = lbp._features(images)
        scores = -np.array([chi_square_distances(features[i : i + 1], features[j : j + 1])[0, 0] for i, j in pairs[:, :2]])
    report: dict[str, Any] = {"method": method}
    report.update(evaluation.verification_metrics(scores, pairs[:, 2].astype(bool), fold_ids=folds))
    return report
