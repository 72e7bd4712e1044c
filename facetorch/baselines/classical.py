"""Classical face baselines (HOG + SVM, eigenfaces, LBP histograms) with one small interface.

Every classifier has ``fit(images, labels) -> self``, ``predict(images) -> (N,) labels`` and
``decision_function(images)`` (scores for ROC / AUC / top-k: higher means more likely).
Images are a list (or array) of greyscale ``HxW`` arrays, uint8 in [0, 255] or float in
[0, 1] (or [0, 255]); colour ``HxWx3`` (RGB) arrays are converted to grey. Each baseline
resizes to its own fixed ``size`` (height, width), after an optional central crop
(``center_crop``: the kept fraction of each side, e.g. 0.5 for the middle of a 250x250 LFW
image, where the face is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from skimage.feature import hog, local_binary_pattern
from sklearn.decomposition import PCA
from sklearn.svm import LinearSVC

__all__ = [
    "EigenfaceEmbedder",
    "EigenfacesSvm",
    "HogSvmClassifier",
    "LbpNearestNeighbour",
    "chi_square_distances",
    "eigenface_embeddings",
    "prepare_images",
]

Images = Sequence[np.ndarray] | np.ndarray


_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV


def _to_grey_float(image: np.ndarray, index: int) -> np.ndarray:
    """One image as a float32 greyscale array in [0, 1]."""
    img = np.asarray(image)
    scale = 255.0 if img.dtype == np.uint8 else 1.0
    img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3] @ _GREY_WEIGHTS
    if img.ndim != 2:
        raise ValueError(
            f"images[{index}]: expected a greyscale HxW (or HxWx3) array, got shape {img.shape}"
        )
    if scale == 1.0 and img.size and img.max() > 1.0:
        scale = 255.0  # float pixels in [0, 255] (e.g. after a cast) rather than [0, 1]
    return np.clip(img / scale, 0.0, 1.0)


def _center_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    if fraction >= 1.0:
        return img
    h, w = img.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top : top + ch, left : left + cw]


def prepare_images(images: Images, size: tuple[int, int], center_crop: float = 1.0) -> np.ndarray:
    """Stack images as an (N, H, W) float32 array in [0, 1]: grey, centrally cropped, resized.

    Args:
        images: greyscale (or RGB) arrays of any size.
        size: (height, width) after resizing.
        center_crop: fraction of height and width kept around the centre before resizing.
    """
    if not 0.0 < center_crop <= 1.0:
        raise ValueError(f"center_crop: expected a fraction in (0, 1], got {center_crop}")
    height, width = size
    out = np.empty((len(images), height, width), dtype=np.float32)
    for i, image in enumerate(images):
        img = _center_crop(_to_grey_float(image, i), center_crop)
        # INTER_AREA averages when shrinking (no aliasing); cv2 takes (width, height).
        out[i] = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return out


def _check_fit_inputs(images: Images, labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(images):
        raise ValueError(
            f"expected one label per image: {len(images)} images, labels of shape {y.shape}"
        )
    if len(np.unique(y)) < 2:
        raise ValueError(f"labels: expected at least 2 classes, got {np.unique(y).tolist()}")
    return y


def _fit_pca(x: np.ndarray, n_components: int, whiten: bool) -> PCA:
    """PCA with at most ``n_components`` (capped by the samples - 1 and the features)."""
    k = min(n_components, len(x) - 1, x.shape[1])
    return PCA(n_components=k, whiten=whiten, svd_solver="randomized", random_state=0).fit(x)


class _ImageClassifier:
    """Shared ``predict`` / ``score`` on top of a subclass's ``decision_function``."""

    classes_: np.ndarray

    def decision_function(self, images: Images) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images: Images) -> np.ndarray:
        """(N,) predicted labels (from the classes seen in ``fit``)."""
        scores = self.decision_function(images)
        if scores.ndim == 1:  # binary: positive score means classes_[1]
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[scores.argmax(axis=1)]

    def score(self, images: Images, labels: Any) -> float:
        """Accuracy on ``images``."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))


class HogSvmClassifier(_ImageClassifier):
    """HOG descriptor + linear SVM, e.g. face vs non-face.

    Args:
        size: (height, width) the images are resized to.
        orientations, pixels_per_cell, cells_per_block: skimage ``hog`` settings.
        C: SVM regularisation (smaller = stronger).
        center_crop: fraction of each side kept around the centre.
    """

    def __init__(
        self,
        size: tuple[int, int] = (32, 32),
        orientations: int = 9,
        pixels_per_cell: tuple[int, int] = (4, 4),
        cells_per_block: tuple[int, int] = (2, 2),
        C: float = 0.01,
        center_crop: float = 1.0,
    ) -> None:
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.C = C
        self.center_crop = center_crop

    def _features(self, images: Images) -> np.ndarray:
        stack = prepare_images(images, self.size, self.center_crop)
        return np.stack(
            [
                hog(
                    img,
                    orientations=self.orientations,
                    pixels_per_cell=self.pixels_per_cell,
                    cells_per_block=self.cells_per_block,
                    block_norm="L2-Hys",
                )
                for img in stack
            ]
        )

    def fit(self, images: Images, labels: Any) -> HogSvmClassifier:
        """Fit on images and labels (any two or more classes)."""
        y = _check_fit_inputs(images, labels)
        self.svm_ = LinearSVC(C=self.C, max_iter=20_000).fit(self._features(images), y)
        self.classes_ = self.svm_.classes_
        return self

    def decision_function(self, images: Images) -> np.ndarray:
        """SVM margins: (N,) for two classes (positive = ``classes_[1]``), else (N, C)."""
        return self.svm_.decision_function(self._features(images))


class EigenfacesSvm(_ImageClassifier):
    """Eigenfaces (whitened PCA of pixels) + linear SVM for identity classification.

    Args:
        n_components: PCA components kept (capped at the number of training images - 1).
        size: (height, width) the images are resized to.
        C: SVM regularisation.
        center_crop: fraction of each side kept around the centre.
    """

    def __init__(
        self,
        n_components: int = 100,
        size: tuple[int, int] = (64, 64),
        C: float = 1.0,
        center_crop: float = 1.0,
    ) -> None:
        self.n_components = n_components
        self.size = size
        self.C = C
        self.center_crop = center_crop

    def _features(self, images: Images) -> np.ndarray:
        return prepare_images(images, self.size, self.center_crop).reshape(len(images), -1)

    def fit(self, images: Images, labels: Any) -> EigenfacesSvm:
        """Fit PCA and the SVM on training images and their identities."""
        y = _check_fit_inputs(images, labels)
        x = self._features(images)
        self.pca_ = _fit_pca(x, self.n_components, whiten=True)
        self.svm_ = LinearSVC(C=self.C, max_iter=20_000).fit(self.pca_.transform(x), y)
        self.classes_ = self.svm_.classes_
        return self

    def decision_function(self, images: Images) -> np.ndarray:
        """One-vs-rest SVM margins: (N,) for two classes, else (N, C)."""
        return self.svm_.decision_function(self.pca_.transform(self._features(images)))


def chi_square_distances(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, M) chi-square distances sum((x - y)^2 / (x + y)) between rows of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for start in range(0, len(a), chunk):  # chunks bound the (chunk, M, D) temporary
        x = a[start : start + chunk, None, :]
        num = (x - b[None]) ** 2
        den = x + b[None]
        out[start : start + chunk] = np.sum(
            np.divide(num, den, out=np.zeros_like(num), where=den > 0), axis=2
        )
    return out


class LbpNearestNeighbour(_ImageClassifier):
    """Local binary pattern histograms per grid cell + 1-nearest neighbour (chi-square).

    Args:
        grid: (rows, cols) of cells; one histogram per cell, concatenated.
        P, R, method: skimage ``local_binary_pattern`` settings.
        size: (height, width) the images are resized to.
        center_crop: fraction of each side kept around the centre.
    """

    def __init__(
        self,
        grid: tuple[int, int] = (8, 8),
        P: int = 8,
        R: float = 1,
        method: str = "uniform",
        size: tuple[int, int] = (96, 96),
        center_crop: float = 1.0,
    ) -> None:
        self.grid = grid
        self.P = P
        self.R = R
        self.method = method
        self.size = size
        self.center_crop = center_crop
        self._num_bins()  # reject an unsupported method now rather than at fit time

    def _num_bins(self) -> int:
        """Number of distinct LBP codes for ``method``."""
        if self.method == "uniform":
            return self.P + 2
        if self.method == "nri_uniform":
            return self.P * (self.P - 1) + 3
        if self.method in ("default", "ror"):
            return 2**self.P
        raise ValueError(
            f"method: expected 'uniform', 'nri_uniform', 'default' or 'ror', got {self.method!r}"
        )

    def _histograms(self, img: np.ndarray) -> np.ndarray:
        """Concatenated, normalised LBP code histograms of the grid cells of one image."""
        # LBP on uint8: skimage warns on float input and the codes only need the ordering.
        pixels = np.round(img * 255).astype(np.uint8)
        codes = local_binary_pattern(pixels, self.P, self.R, method=self.method).astype(np.int64)
        bins = self._num_bins()
        rows, cols = self.grid
        # Cell index of every pixel (near-equal cells), then one bincount for all cells.
        row_cell = np.repeat(np.arange(rows), [len(c) for c in np.array_split(codes[:, 0], rows)])
        col_cell = np.repeat(np.arange(cols), [len(c) for c in np.array_split(codes[0], cols)])
        cell = row_cell[:, None] * cols + col_cell[None, :]
        hist = np.bincount((cell * bins + codes).ravel(), minlength=rows * cols * bins)
        hist = hist.reshape(rows * cols, bins).astype(np.float32)
        return (hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0)).ravel()

    def _features(self, images: Images) -> np.ndarray:
        return np.stack(
            [self._histograms(img) for img in prepare_images(images, self.size, self.center_crop)]
        )

    def fit(self, images: Images, labels: Any) -> LbpNearestNeighbour:
        """Store the training histograms and labels."""
        y = _check_fit_inputs(images, labels)
        self.train_features_ = self._features(images)
        self.classes_, self.train_class_index_ = np.unique(y, return_inverse=True)
        return self

    def decision_function(self, images: Images) -> np.ndarray:
        """(N, C) minus the chi-square distance to the nearest training image of each class."""
        dist = chi_square_distances(self._features(images), self.train_features_)
        nearest = [
            dist[:, self.train_class_index_ == c].min(axis=1) for c in range(len(self.classes_))
        ]
        return -np.stack(nearest, axis=1)


class EigenfaceEmbedder:
    """Eigenface embeddings for verification: PCA fitted on training faces, whitened, L2-normed.

    The dot product of two embeddings is their cosine similarity (higher = more alike).

    Args:
        n_components: PCA components kept (capped at the number of training images - 1).
        size: (height, width) the images are resized to.
        whiten: divide each component by its standard deviation.
        center_crop: fraction of each side kept around the centre.
    """

    def __init__(
        self,
        n_components: int = 100,
        size: tuple[int, int] = (64, 64),
        whiten: bool = True,
        center_crop: float = 1.0,
    ) -> None:
        self.n_components = n_components
        self.size = size
        self.whiten = whiten
        self.center_crop = center_crop

    def fit(self, images: Images) -> EigenfaceEmbedder:
        """Fit the PCA on training images (no labels needed)."""
        x = prepare_images(images, self.size, self.center_crop).reshape(len(images), -1)
        self.pca_ = _fit_pca(x, self.n_components, whiten=self.whiten)
        return self

    def transform(self, images: Images) -> np.ndarray:
        """(N, n_components) L2-normalised embeddings."""
        x = prepare_images(images, self.size, self.center_crop).reshape(len(images), -1)
        z = self.pca_.transform(x)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def eigenface_embeddings(
    train_images: Images, images: Images, n_components: int = 100, **kwargs: Any
) -> np.ndarray:
    """Fit an :class:`EigenfaceEmbedder` on ``train_images`` and embed ``images``."""
    return (
        EigenfaceEmbedder(n_components=n_components, **kwargs).fit(train_images).transform(images)
    )
