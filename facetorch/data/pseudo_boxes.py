"""Pseudo-labelled face boxes: a teacher detector's box mapped to the hand-drawn convention, and extra training roots.

A teacher (dlib's CNN detector) draws tighter, squarer boxes than the hand-drawn ones of the
``labelme`` sets. :class:`BoxMapping` is a linear map of centre and size, fitted by least squares on
photos that have both (the training split only), that turns a teacher box into the box a person
would have drawn. :func:`write_labelme` writes one photo with its box in the ``labelme`` layout.
:func:`merge_box_indices` and :func:`mixed_weights` let the detector train on hand-labelled and
pseudo-labelled photos together, with a fixed share of each epoch drawn from the pseudo ones.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from facetorch import io
from facetorch.data.detection import BoxIndex

__all__ = ["BoxMapping", "check_extra_train", "fit_box_mapping", "merge_box_indices", "mixed_weights", "write_labelme"]


def _centre_size(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                     boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)  # fmt: skip


@dataclass(frozen=True)
class BoxMapping:
    """Teacher box -> hand-drawn box: the centre moves by a share of the teacher box's size, the size scales.

    ``cx' = cx + dx * w``, ``cy' = cy + dy * h``, ``w' = sw * w``, ``h' = sh * h`` (pixels of the
    photo). Relative to the box itself, so one mapping fits faces of any size; the identity is
    ``BoxMapping()``.
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, boxes: np.ndarray, width: float | None = None, height: float | None = None) -> np.ndarray:
        """Mapped ``(N, 4)`` boxes ``x1, y1, x2, y2``, clipped to the photo when its size is given."""
        cx, cy, w, h = _centre_size(boxes).T
        cx, cy, w, h = cx + self.dx * w, cy + self.dy * h, self.sw * w, self.sh * h
        out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        if width is not None and height is not None:
            out = np.clip(out, 0.0, [width, height, width, height])
        return out

    def to_dict(self) -> dict[str, float]:
        """The four numbers, for a JSON summary."""
        return {key: round(value, 6) for key, value in asdict(self).items()}


def fit_box_mapping(teacher: np.ndarray, truth: np.ndarray) -> BoxMapping:
    """Least-squares :class:`BoxMapping` from teacher boxes to the true boxes of the same photos.

    Each of the four numbers is the least-squares slope through the origin of one coordinate (the
    centre's offset against the teacher box's side, the true side against the teacher's side).

    Args:
        teacher: (N, 4) teacher boxes, pixels ``x1, y1, x2, y2``.
        truth: (N, 4) hand-drawn boxes of the same photos, same units.

    Raises:
        ValueError: shapes differ, fewer than 2 pairs, or a box without area.
    """
    teacher, truth = np.asarray(teacher, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if teacher.ndim != 2 or teacher.shape[1:] != (4,) or teacher.shape != truth.shape:
        raise ValueError(f"Expected teacher and true boxes of one shape (N, 4), got {teacher.shape} and {truth.shape}")
    if len(teacher) < 2:
        raise ValueError(f"Fitting a box mapping needs at least 2 photos with both boxes, got {len(teacher)}")
    t, h = _centre_size(teacher), _centre_size(truth)
    if (t[:, 2:] <= 0).any() or (h[:, 2:] <= 0).any():
        raise ValueError("Fitting a box mapping needs boxes with a positive width and height (x2 > x1, y2 > y1)")

    def slope(x: np.ndarray, y: np.ndarray) -> float:
        return float((x * y).sum() / (x * x).sum())

    return BoxMapping(dx=slope(t[:, 2], h[:, 0] - t[:, 0]), dy=slope(t[:, 3], h[:, 1] - t[:, 1]),
                      sw=slope(t[:, 2], h[:, 2]), sh=slope(t[:, 3], h[:, 3]))  # fmt: skip


def write_labelme(image: Path, output: Path, stem: str, box: Sequence[float], size: tuple[int, int]) -> Path:
    """Copy ``image`` to ``output/<stem><ext>`` with ``<stem>.json`` (LabelMe 5, one ``face`` rectangle) beside it.

    JPEG and PNG files are copied byte for byte; other formats (ORL's PGM) are written as PNG. Both
    files are written under temporary names and renamed, so a stopped run leaves no half photo.

    Returns:
        The written image's path.
    """
    suffix = image.suffix.lower()
    target = output / f"{stem}{suffix if suffix in ('.jpg', '.jpeg', '.png') else '.png'}"
    with io.atomic_open(target, "wb") as handle:
        if target.suffix == suffix:
            with open(image, "rb") as source:
                shutil.copyfileobj(source, handle)
        else:
            with Image.open(image) as picture:
                picture.save(handle, format="PNG")
    x1, y1, x2, y2 = (round(float(v), 2) for v in box)
    data = {"version": "5.4.1", "flags": {}, "imagePath": target.name, "imageData": None,
            "imageWidth": int(size[0]), "imageHeight": int(size[1]),
            "shapes": [{"label": "face", "points": [[x1, y1], [x2, y2]], "group_id": None, "shape_type": "rectangle",
                        "flags": {"pseudo_label": True}}]}  # fmt: skip
    io.write_text(output / f"{stem}.json", json.dumps(data))
    return target


def merge_box_indices(first: BoxIndex, others: Sequence[BoxIndex]) -> BoxIndex:
    """One :class:`BoxIndex` of ``first``'s samples followed by each of ``others``' (``first``'s root and classes)."""
    parts = [first, *others]
    return BoxIndex(
        [s for part in parts for s in part.sources], [label for part in parts for label in part.labels],
        first.class_names, first.root,
        boxes=[b for part in parts for b in part.boxes], sizes=[s for part in parts for s in part.sizes],
    )  # fmt: skip


def check_extra_train(layout: str, folders: Optional[Sequence[str]], share: float) -> tuple[list[str], float]:
    """``data.extra_train`` as a list and ``data.extra_share``, checked against the layout.

    Raises:
        ValueError: extra folders for a layout other than ``labelme``, or a share outside [0, 1).
    """
    folders = [str(folder) for folder in folders or []]
    if folders and layout != "labelme":
        raise ValueError(f"data.extra_train adds labelme folders to the train split: it needs layout labelme, not {layout!r}")
    if not 0.0 <= share < 1.0:
        raise ValueError(f"data.extra_share must be in [0, 1) (the rest of each epoch are data.root photos), got {share}")
    return folders, float(share)


def mixed_weights(own: int, extra: int, extra_share: float) -> np.ndarray:
    """Sampling weights of ``own`` samples then ``extra`` ones, so that ``extra_share`` of the draws are extra.

    Every sample of a group is equally likely; the weights sum to 1.

    Raises:
        ValueError: ``extra_share`` outside [0, 1), or a group that would be drawn from is empty.
    """
    check_extra_train("labelme", [], extra_share)
    if own < 1 or (extra < 1 and extra_share > 0):
        raise ValueError(f"Mixing training photos needs some of each kind, got {own} from data.root and {extra} extra")
    weights = np.full(own + extra, (1.0 - extra_share) / own)
    if extra:
        weights[own:] = extra_share / extra
    return weights
