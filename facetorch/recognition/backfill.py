"""Faces found late: a track that starts at a detection frame was often on screen since the one before.

With ``--detect_every N`` a face that walks in just after a detection frame is found up to N - 1
frames late. Where the rows of those frames are still held (a video file's decision delay,
:mod:`~facetorch.recognition.decision_delay`), :class:`Backfill` follows the new track's first box
backward through the frames since the last detection, with the same optical flow that moves boxes
forward (:func:`~facetorch.recognition.tracking.flow_boxes`, forward-backward checked), and gives
those frames a row too. It stops at the first frame where the flow fails, the box is mostly outside
the picture (the face was still walking in), or the box overlaps a face that frame already has
(a face that came out from behind another was hidden there).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from facetorch.boxes import box_iou
from facetorch.recognition.tracking import Box, flow_boxes

__all__ = ["Backfill", "RecentFrame"]

MIN_INSIDE = 0.5  # share of a box's area that must lie inside the picture (dlib's detector finds faces half outside)
MAX_OVERLAP = 0.3  # IoU with a face the frame has already, above which the box is not that face's own


@dataclass
class RecentFrame:
    """A processed frame since the last detection frame: its index, grey picture and the boxes of its faces."""

    index: int
    grey: np.ndarray
    boxes: list[Box]


class Backfill:
    """The frames since the last detection frame, and new tracks' boxes followed back through them.

    Args:
        frames: Frames remembered at most (``detect_every - 1``: those between two detection frames).
    """

    def __init__(self, frames: int) -> None:
        self._recent: deque[RecentFrame] = deque(maxlen=max(frames, 0))

    def remember(self, index: int, grey: np.ndarray, boxes: list[Box]) -> None:
        """Keep a frame that had no detection (with the boxes its faces got)."""
        if self._recent.maxlen:
            self._recent.append(RecentFrame(index, grey, list(boxes)))

    def forget(self) -> None:
        """Drop the remembered frames (after a detection frame, a cut or lost frames: flow cannot reach back past them)."""
        self._recent.clear()

    def trace(self, grey: np.ndarray, box: Box, after: float = float("-inf")) -> list[tuple[int, Box, np.ndarray]]:
        """``box`` of ``grey`` followed back through the remembered frames while it holds: (index, box, grey), newest first.

        Only frames with an index above ``after`` are reached (those whose rows are not written yet).
        """
        out: list[tuple[int, Box, np.ndarray]] = []
        later, current = grey, box
        for recent in reversed(self._recent):
            if recent.index <= after:
                break
            moved = flow_boxes(later, recent.grey, [current])[0]
            if moved is None or _inside(moved, recent.grey.shape) < MIN_INSIDE:
                break
            if recent.boxes and float(box_iou(np.array([moved]), np.array(recent.boxes)).max()) > MAX_OVERLAP:
                break
            out.append((recent.index, moved, recent.grey))
            later, current = recent.grey, moved
        return out


def _inside(box: Box, shape: tuple[int, ...]) -> float:
    """The share of ``box``'s area inside a picture of ``shape`` (height, width, ...)."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0:
        return 0.0
    height, width = shape[:2]
    inner = max(min(x2, width) - max(x1, 0.0), 0.0) * max(min(y2, height) - max(y1, 0.0), 0.0)
    return inner / area
