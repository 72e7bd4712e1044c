"""Face tracks: the faces of consecutive frames associated into tracks, ByteTrack's way, plus appearance.

:class:`FaceTracker` keeps one :class:`Track` per face, each with a constant-velocity Kalman
filter on its box (centre, width, height and their speeds; the noise scaled by the box's size, as
ByteTrack / BoT-SORT). At a frame with detections (:meth:`FaceTracker.update`):

1. every track's box is predicted;
2. detections scored at least ``high_score`` are matched to all tracks (followed and lost) on
   ``1 - IoU`` with the Hungarian algorithm, pairs under ``match_iou`` refused; where boxes are
   ambiguous (a detection overlapping two tracks, or a track two detections) and an ``embed``
   function is given, the faces are embedded and a pair whose cosine similarity to the track's
   appearance is under ``same_person`` is refused, the others cost half IoU, half appearance;
3. the remaining detections (the lower scores) are matched to the remaining followed tracks on IoU
   (at least ``low_iou``), as ByteTrack's second stage;
4. a high detection left over is embedded and given back to a lost track whose appearance it
   matches (cosine at least ``reidentify``): a face that re-appears after an occlusion keeps its id;
   else it starts a new track;
5. a followed track left unmatched is lost (no row until it is matched again); a track lost for
   more than ``max_gap`` frames ends. The caller may :meth:`FaceTracker.split` a track whose new
   face does not look like its old ones (two faces swapped, or a cut in the video).

Between detections, :func:`flow_boxes` moves the boxes with sparse optical flow (Lucas-Kanade,
forward-backward checked), and :meth:`FaceTracker.follow` feeds them to the filters; where the
flow fails the filter's prediction stands in.

No library is used for this: supervision's ``sv.ByteTrack`` left supervision for Roboflow's
``trackers`` package, which (like supervision up to 0.26) requires ``opencv-python``, a second
``cv2`` beside albumentations' ``opencv-python-headless`` (at 5.x, without the Haar cascades), and
neither moves boxes between detections nor uses appearance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from facetorch.boxes import box_iou

__all__ = ["BoxKalman", "FaceTracker", "Track", "flow_boxes"]

Box = tuple[float, float, float, float]
EmbedFn = Callable[[Sequence[int]], np.ndarray]  # detection indices -> their unit embeddings (N, D)
_FORBIDDEN = 1e6


class BoxKalman:
    """A constant-velocity Kalman filter on ``(cx, cy, w, h)`` with noise proportional to the box's size."""

    position_std = 1.0 / 20
    velocity_std = 1.0 / 160

    def __init__(self, box: Box) -> None:
        z = _xywh(box)
        self.mean = np.concatenate([z, np.zeros(4)])
        w, h = z[2], z[3]
        std = np.array([2 * self.position_std * w, 2 * self.position_std * h] * 2 + [10 * self.velocity_std * w,
                        10 * self.velocity_std * h] * 2)  # fmt: skip
        self.covariance = np.diag(std**2)

    def predict(self) -> None:
        """Advance one frame."""
        w, h = self.mean[2], self.mean[3]
        noise = np.array([self.position_std * w, self.position_std * h] * 2 + [self.velocity_std * w, self.velocity_std * h] * 2)
        motion = np.eye(8)
        motion[:4, 4:] = np.eye(4)
        self.mean = motion @ self.mean
        self.covariance = motion @ self.covariance @ motion.T + np.diag(noise**2)
        self.mean[2:4] = np.maximum(self.mean[2:4], 2.0)

    def update(self, box: Box, noise_scale: float = 1.0) -> None:
        """Correct with a measured box (``noise_scale`` > 1 for a less trusted one, as a flow estimate)."""
        z = _xywh(box)
        w, h = self.mean[2], self.mean[3]
        r = np.diag((noise_scale * np.array([self.position_std * w, self.position_std * h] * 2)) ** 2)
        projected = self.covariance[:4, :4] + r
        gain = np.linalg.solve(projected, self.covariance[:4, :]).T
        self.mean = self.mean + gain @ (z - self.mean[:4])
        self.covariance = self.covariance - gain @ projected @ gain.T

    @property
    def box(self) -> Box:
        """The filter's box ``(x1, y1, x2, y2)``."""
        cx, cy, w, h = self.mean[:4]
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _xywh(box: Sequence[float]) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])


@dataclass
class Track:
    """One face followed over frames.

    Attributes:
        id: The track's number (from 1, in order of appearance).
        box: Its box in the current frame.
        first_frame: The frame it started.
        last_detected: The last frame a detection was matched to it.
        visible: Followed now (matched at the last detection frame); ``False`` while lost.
        detection_score: The last matched detection's score.
        feature: Its appearance (a unit embedding), set by the caller (None: not embedded yet).
        detected_now: Matched to a detection in the current frame.
        detection: The index of that detection in the current frame's list (-1 when none).
        previous_box: Its box in the previous frame (where optical flow starts from; ``box`` is predicted by then).
    """

    id: int
    box: Box
    first_frame: int
    last_detected: int
    kalman: BoxKalman = field(repr=False)
    visible: bool = True
    detection_score: float = 1.0
    feature: Optional[np.ndarray] = field(default=None, repr=False)
    detected_now: bool = True
    detection: int = -1
    previous_box: Optional[Box] = None


class FaceTracker:
    """Associate detections into :class:`Track` s (see the module docstring for the steps).

    Args:
        max_gap: Frames a track may go without a detection before it ends.
        high_score: Detections scored at least this start tracks and match first; lower ones only extend tracks.
        match_iou: Least IoU of a first-stage match.
        low_iou: Least IoU of a second-stage (low-score) match.
        same_person: Least cosine similarity of a face to a track's appearance where boxes are ambiguous.
        reidentify: Least cosine similarity to give a new detection back to a lost track.
    """

    def __init__(self, max_gap: int = 15, high_score: float = 0.3, match_iou: float = 0.2, low_iou: float = 0.5,
                 same_person: float = 0.8, reidentify: float = 0.9) -> None:  # fmt: skip
        if max_gap < 0:
            raise ValueError(f"--max_gap must be 0 or more, got {max_gap}")
        self.max_gap = max_gap
        self.high_score = high_score
        self.match_iou = match_iou
        self.low_iou = low_iou
        self.same_person = same_person
        self.reidentify = reidentify
        self.tracks: list[Track] = []
        self.ended: list[Track] = []
        self.next_id = 1

    @property
    def visible(self) -> list[Track]:
        """The tracks followed in the current frame (the ones that get a row)."""
        return [t for t in self.tracks if t.visible]

    def predict(self) -> None:
        """Advance every track's filter to the next frame (call once per frame, before update or follow)."""
        for track in self.tracks:
            track.previous_box = track.box
            track.kalman.predict()
            track.box = track.kalman.box
            track.detected_now, track.detection = False, -1

    def follow(self, moved: dict[int, Optional[Box]]) -> None:
        """Between detections: correct the visible tracks with boxes moved by flow (``None``: keep the prediction)."""
        for track in self.visible:
            box = moved.get(track.id)
            if box is not None:
                track.kalman.update(box, noise_scale=2.0)
                track.box = box

    def update(self, frame: int, boxes: np.ndarray, scores: np.ndarray, embed: Optional[EmbedFn] = None) -> list[Track]:
        """Match the detections of ``frame``; returns the visible tracks (matched or new)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        high = [i for i in range(len(boxes)) if scores[i] >= self.high_score]
        low = [i for i in range(len(boxes)) if scores[i] < self.high_score]
        unmatched = self._match(frame, boxes, scores, high, list(self.tracks), self.match_iou, embed)
        followed = [t for t in self.tracks if t.visible and not t.detected_now]
        self._match(frame, boxes, scores, low, followed, self.low_iou, None)
        for track in self.tracks:
            if not track.detected_now:
                track.visible = False
        new = self._reidentify(frame, boxes, scores, unmatched, embed)
        for i in new:
            track = Track(self.next_id, tuple(boxes[i]), frame, frame, BoxKalman(tuple(boxes[i])),  # type: ignore[arg-type]
                          detection_score=float(scores[i]), detection=i)  # fmt: skip
            self.next_id += 1
            self.tracks.append(track)
        self._end_old(frame)
        return self.visible

    def split(self, track: Track, frame: int) -> Track:
        """End ``track`` here and give its current detection to a new track (another face took its place)."""
        self.tracks.remove(track)
        self.ended.append(track)
        new = Track(self.next_id, track.box, frame, frame, BoxKalman(track.box), detection_score=track.detection_score,
                    detection=track.detection)  # fmt: skip
        self.next_id += 1
        self.tracks.append(new)
        return new

    def end_all(self) -> None:
        """End every track (the stream is over)."""
        self.ended.extend(self.tracks)
        self.tracks = []

    # ------------------------------------------------------------------ steps
    def _match(self, frame: int, boxes: np.ndarray, scores: np.ndarray, detections: list[int], tracks: list[Track],
               least_iou: float, embed: Optional[EmbedFn]) -> list[int]:  # fmt: skip
        """Hungarian matching on 1 - IoU (appearance where ambiguous); returns the detections left unmatched."""
        if not detections or not tracks:
            return detections
        overlap = box_iou(boxes[detections], np.array([t.box for t in tracks]))
        cost = np.where(overlap >= least_iou, 1.0 - overlap, _FORBIDDEN)
        touching = overlap > 0.1
        ambiguous = (touching.sum(axis=1, keepdims=True) > 1) | (touching.sum(axis=0, keepdims=True) > 1)
        ambiguous &= cost < _FORBIDDEN
        rows = sorted({int(r) for r, c in zip(*np.nonzero(ambiguous)) if tracks[c].feature is not None})
        if embed is not None and rows:
            faces = embed([detections[r] for r in rows])
            for k, r in enumerate(rows):
                for c, track in enumerate(tracks):
                    if ambiguous[r, c] and track.feature is not None:
                        similarity = float(faces[k] @ track.feature)
                        cost[r, c] = _FORBIDDEN if similarity < self.same_person else 0.5 * cost[r, c] + 0.5 * (1 - similarity)
        chosen_rows, chosen_cols = linear_sum_assignment(cost)
        matched = set()
        for r, c in zip(chosen_rows, chosen_cols):
            if cost[r, c] >= _FORBIDDEN:
                continue
            self._assign(tracks[c], frame, boxes, scores, detections[r])
            matched.add(r)
        return [d for k, d in enumerate(detections) if k not in matched]

    def _assign(self, track: Track, frame: int, boxes: np.ndarray, scores: np.ndarray, index: int) -> None:
        box = tuple(float(v) for v in boxes[index])
        track.kalman.update(box)  # type: ignore[arg-type]
        track.box = box  # type: ignore[assignment]
        track.last_detected, track.visible, track.detected_now, track.detection = frame, True, True, index
        track.detection_score = float(scores[index])

    def _reidentify(self, frame: int, boxes: np.ndarray, scores: np.ndarray, unmatched: list[int],
                    embed: Optional[EmbedFn]) -> list[int]:  # fmt: skip
        """Give leftover high detections back to lost tracks they look like; returns those that start new tracks."""
        lost = [t for t in self.tracks if not t.visible and t.feature is not None]
        if embed is None or not lost or not unmatched:
            return unmatched
        faces = embed(unmatched)
        similarity = faces @ np.stack([t.feature for t in lost]).T  # type: ignore[misc]
        taken_rows: set[int] = set()
        taken_cols: set[int] = set()
        for flat in np.argsort(-similarity, axis=None, kind="stable"):
            r, c = divmod(int(flat), len(lost))
            if similarity[r, c] < self.reidentify:
                break
            if r in taken_rows or c in taken_cols:
                continue
            taken_rows.add(r)
            taken_cols.add(c)
            lost[c].kalman = BoxKalman(tuple(boxes[unmatched[r]]))  # type: ignore[arg-type]  # its old motion is stale
            self._assign(lost[c], frame, boxes, scores, unmatched[r])
        return [d for k, d in enumerate(unmatched) if k not in taken_rows]

    def _end_old(self, frame: int) -> None:
        keep = []
        for track in self.tracks:
            (keep if frame - track.last_detected <= self.max_gap else self.ended).append(track)
        self.tracks = keep


def flow_boxes(previous: np.ndarray, current: np.ndarray, boxes: Sequence[Box], grid: int = 6) -> list[Optional[Box]]:
    """Each box moved from the grey frame ``previous`` to ``current`` by sparse optical flow; ``None`` where it fails.

    A grid of points in the middle of each box is followed with pyramidal Lucas-Kanade, forward
    and back; points that do not come back within a pixel are dropped. The box moves by the
    median shift and grows by the median change of the distances between its points.
    """
    if not boxes:
        return []
    points, owners = [], []
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        xs = np.linspace(x1 + 0.2 * (x2 - x1), x2 - 0.2 * (x2 - x1), grid)
        ys = np.linspace(y1 + 0.2 * (y2 - y1), y2 - 0.2 * (y2 - y1), grid)
        points.append(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2))
        owners.append(np.full(grid * grid, k))
    start = np.concatenate(points).astype(np.float32).reshape(-1, 1, 2)
    owner = np.concatenate(owners)
    options = {"winSize": (15, 15), "maxLevel": 2, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **options)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, moved, None, **options)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (np.linalg.norm((back - start).reshape(-1, 2), axis=1) < 1.0)
    start, moved = start.reshape(-1, 2), moved.reshape(-1, 2)
    out: list[Optional[Box]] = []
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        keep = good & (owner == k)
        if keep.sum() < max(4, grid * grid // 4):
            out.append(None)
            continue
        a, b = start[keep], moved[keep]
        shift = np.median(b - a, axis=0)
        i, j = np.triu_indices(len(a), 1)
        before, after = np.linalg.norm(a[i] - a[j], axis=1), np.linalg.norm(b[i] - b[j], axis=1)
        scale = float(np.median(after[before > 1e-3] / before[before > 1e-3])) if (before > 1e-3).any() else 1.0
        cx, cy = (x1 + x2) / 2 + shift[0], (y1 + y2) / 2 + shift[1]
        half_w, half_h = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
        out.append((cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    return out
