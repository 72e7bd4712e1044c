"""Recognition over a video or a camera with face tracks: detect less, track more, name from evidence over time.

:func:`track_stream` is the loop behind ``gallery.py recognize`` for videos and cameras (unless
``--no_track``). For each frame of the source:

- every ``detect_every``-th frame (and at once after a cut or a new scene: the whole frame changed at once) the
  detector runs and :class:`~facetorch.recognition.tracking.FaceTracker` associates its boxes with
  the tracks; in between, the boxes move by optical flow, so every frame gets its rows;
- at a detection frame, a track's face is embedded when the track is new, when its box grew or
  shrank by ``resize`` since its last embedding, when its name is still being decided, and every
  ``embed_every`` frames; each embedding is weighted by the face's quality
  (:mod:`~facetorch.recognition.quality`) in the track's mean, which names the track
  (:mod:`~facetorch.recognition.evidence`);
- each visible track gets a row: its box, name, score, track id and the face's quality;
- a track that starts (or is found again) at a detection frame is followed back into the frames
  since the last one that the caller still holds (:meth:`TrackedStream.earlier_faces`), and the
  caller's decision delay (:mod:`~facetorch.recognition.decision_delay`) gives held rows the names
  their tracks settle on.

Frames that cannot be read keep their index (``frame`` counts every frame of the source) and
are listed; the tracks go on across them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import cv2
import numpy as np

from facetorch.recognition.backfill import Backfill
from facetorch.recognition.evidence import NameEvidence
from facetorch.recognition.gallery import UNKNOWN
from facetorch.recognition.pipeline import KNOWN_COLOUR, UNKNOWN_COLOUR, Recognizer, embed_faces
from facetorch.recognition.quality import MAX_OFFSET, face_quality, pose_offset
from facetorch.recognition.streams import draw_label
from facetorch.recognition.track_threshold import track_rule
from facetorch.recognition.tracking import FaceTracker, Track, flow_boxes

__all__ = ["TRACKS_NAME", "TRACK_FIELDS", "TrackOptions", "TrackedFace", "TrackedStream", "draw_tracked"]

TRACKS_NAME = "tracks.csv"
SAME_PERSON_MARGIN = 0.05
NEAR = 0.03  # an unknown track this close under the threshold is embedded at every detection frame
CHANGED = 20.0  # grey levels of mean difference between a face's thumbnails that ask for a new embedding
CUT = 2 * CHANGED  # a face unlike its track that also changed this much at once is split at once (a cut, not a blur)
# A new scene that is not a cut (tracks are not split; the detector runs at once): the whole frame changed by
# SCENE_JUMP grey levels and SCENE_RATIO times the change of the frame before, as one photo of a slideshow or
# composed scene after another on the same background (16 to 20 levels, where a still picture changes by 0).
SCENE_JUMP = 8.0
SCENE_RATIO = 4.0
REIDENTIFY_MARGIN = 0.04  # a lost track is given a new face only when it is this much more alike than same_person
TRACK_FIELDS = ["track", "name", "named_from", "first_frame", "last_frame", "frames", "embeddings", "mean_quality",
                "changes"]  # fmt: skip


@dataclass(frozen=True)
class TrackOptions:
    """How a stream is tracked.

    Attributes:
        detect_every: Run the detector every N frames (1: every frame); boxes move by optical flow in between.
        embed_every: Embed a named track's face again after this many frames.
        max_gap: Frames a track may go undetected before it ends.
        resize: Embed again when the box's side changed by this factor since the last embedding.
        confirm: Answers in a row that change a track's name.
        sure: Margin above the threshold that names a track from its first face.
        same_person: Least cosine similarity of a face to its track's mean (None: from the matcher, see
            :func:`_same_person`); below it the track is split.
        decision_delay: Frames a processed frame's rows wait for their tracks' names to settle
            (:mod:`~facetorch.recognition.decision_delay`); None: the default of the source's kind
            (video files wait, cameras do not).
    """

    detect_every: int = 4
    embed_every: int = 15
    max_gap: int = 15
    resize: float = 1.3
    confirm: int = 2
    sure: float = 0.0
    same_person: Optional[float] = None
    decision_delay: Optional[int] = None

    def check(self) -> None:
        """Refuse options out of range, with the flag's name.

        Raises:
            ValueError: a value out of range.
        """
        for flag, value, least in (("--detect_every", self.detect_every, 1), ("--embed_every", self.embed_every, 1),
                                   ("--max_gap", self.max_gap, 0), ("--confirm", self.confirm, 1),
                                   ("--decision_delay", self.decision_delay or 0, 0)):  # fmt: skip
            if value < least:
                raise ValueError(f"{flag} must be {least} or more, got {value}")
        if self.resize <= 1.0:
            raise ValueError(f"--resize must be more than 1, got {self.resize}")


@dataclass(frozen=True)
class TrackedFace:
    """One face of a frame, from its track: box, detector score, the track's name and score, track id, quality."""

    box: tuple[float, float, float, float]
    detection_score: float
    name: str
    score: float
    track: int
    quality: float

    @property
    def known(self) -> bool:
        """Named (not ``unknown``)."""
        return self.name != UNKNOWN


@dataclass
class _History:
    """What the loop keeps of one track beyond its box."""

    evidence: NameEvidence
    first: int
    last: int = -1
    frames: int = 0
    quality_sum: float = 0.0
    embedded_at: int = -(10**9)
    embedded_side: float = 0.0
    pose: float = 1.0  # the last pose part measured from the landmarks (the flow frames reuse it)
    thumbnail: Optional[np.ndarray] = None  # the face at its last embedding, 16x16 grey
    suspect: bool = False  # its last face was unlike the track's mean: the next one decides whether it is split


@dataclass
class TrackedStream:
    """Tracked recognition of one stream's frames (see the module docstring).

    Args:
        recognizer: Its detector, embedder and matcher are used one by one.
        options: The tracking options.
        step: Frames of the source from one processed frame to the next (``--every``).
        hold: Frames of the source the caller holds rows before writing them (its decision delay):
            a new track's face is followed back only into frames still held (:meth:`earlier_faces`).
    """

    recognizer: Recognizer
    options: TrackOptions = field(default_factory=TrackOptions)
    step: int = 1
    hold: int = 0

    def __post_init__(self) -> None:
        self.options.check()
        self.rule = track_rule(self.recognizer.matcher)
        self.same_person = _same_person(self.recognizer, self.options.same_person, self.rule.same_person)
        self.tracker = FaceTracker(max_gap=self.options.max_gap, same_person=self.same_person,
                                   reidentify=self.same_person + REIDENTIFY_MARGIN)  # fmt: skip
        self.history: dict[int, _History] = {}
        self.seconds = self.recognizer.seconds
        for stage in ("track", "quality", "read", "write"):
            self.seconds.setdefault(stage, 0.0)
        self._previous: Optional[np.ndarray] = None
        self._previous_index = -1
        self._processed = 0
        self._grey = np.zeros((1, 1), np.uint8)
        self._landmarks = _landmark_finder(self.recognizer.embedder)
        self._points: dict[int, np.ndarray] = {}
        self._overview: Optional[np.ndarray] = None  # the last frame at 32x32 grey: a cut changes it at once
        self._cut = False  # the current frame is a cut
        self._change = 0.0  # the last frame's change of the 32x32 grey picture (mean grey levels)
        self._backfill = Backfill(self.options.detect_every - 1)
        self._earlier: list[tuple[int, TrackedFace]] = []

    def frame(self, index: int, frame_bgr: np.ndarray) -> list[TrackedFace]:
        """The faces of frame ``index`` (BGR), from the tracks."""
        start = time.perf_counter()
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB) if frame_bgr.ndim == 3 else frame_bgr
        grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
        self.tracker.predict()
        after_gap = self._previous is None or index != self._previous_index + self.step  # flow cannot bridge lost frames
        overview = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        change = 0.0 if self._overview is None else float(np.abs(overview - self._overview).mean())
        cut = change > CHANGED  # a cut: tracks split at once where the face is unlike (below)
        scene = cut or (change > SCENE_JUMP and change > SCENE_RATIO * self._change)
        self._overview, self._change = overview, change
        self._cut = cut
        detect = after_gap or scene or self._processed % self.options.detect_every == 0
        self._processed += 1
        embedded: dict[int, np.ndarray] = {}
        self._points = {}  # this frame's landmarks by detection, from the embedder's alignment
        self._grey = grey
        self.seconds["track"] += time.perf_counter() - start
        self._earlier = []
        if after_gap or scene:
            self._backfill.forget()
        if detect:
            boxes, scores = self._detect(rgb)
            embed = self._embedder(rgb, boxes, embedded)
            start, embedding = time.perf_counter(), self.seconds["embed"]
            followed = {t.id for t in self.tracker.visible}
            seen = self.tracker.update(index, boxes, scores, embed)
            # new tracks and lost ones found again (before _learn: a split piece was on screen as its old track)
            new = [t.id for t in seen if t.id not in followed]
            self.seconds["track"] += time.perf_counter() - start - (self.seconds["embed"] - embedding)  # embed: own stage
            self._learn(index, rgb, grey, boxes, seen, embed, embedded)
            start = time.perf_counter()
            self._trace_back(index, grey, [t for t in self.tracker.visible if t.id in new])
            self.seconds["track"] += time.perf_counter() - start
        else:
            start = time.perf_counter()
            visible = self.tracker.visible
            # the points start where the face was in the previous frame, not where the filter predicts it now
            starts = [t.box if t.previous_box is None else t.previous_box for t in visible]
            moved = flow_boxes(self._previous, grey, starts) if visible else []  # type: ignore[arg-type]
            self.tracker.follow({t.id: box for t, box in zip(visible, moved)})
            self.seconds["track"] += time.perf_counter() - start
        self._previous, self._previous_index = grey, index
        faces = self._faces(index, grey)
        if not detect:
            self._backfill.remember(index, grey, [face.box for face in faces])
        return faces

    def earlier_faces(self) -> list[tuple[int, TrackedFace]]:
        """Faces of earlier frames found by the last :meth:`frame`: ``(index, face)`` of new or found-again tracks.

        Their boxes are followed back (:mod:`~facetorch.recognition.backfill`) only into the frames
        the caller still holds (``hold``); the tracks' frame counts include them.
        """
        return self._earlier

    def finish(self) -> list[dict[str, Any]]:
        """End every track; the rows of ``tracks.csv`` (see :data:`TRACK_FIELDS`), in order of the track ids."""
        self.tracker.end_all()
        rows = []
        for track in sorted(self.tracker.ended, key=lambda t: t.id):
            history = self.history.get(track.id)
            if history is None or history.frames == 0:
                continue
            evidence = history.evidence
            rows.append({"track": track.id, "name": evidence.name, "named_from": "" if evidence.named_from is None else
                         evidence.named_from, "first_frame": history.first, "last_frame": history.last,
                         "frames": history.frames, "embeddings": evidence.embeddings,
                         "mean_quality": f"{history.quality_sum / history.frames:.3f}",
                         "changes": " ".join(f"{frame}:{name}" for frame, name in evidence.changes)})  # fmt: skip
        return rows

    def name_of(self, track: int) -> tuple[str, float]:
        """The current name and score of track ``track`` (ended tracks keep their last ones)."""
        evidence = self.history[track].evidence
        return evidence.name, float(evidence.score)

    # ------------------------------------------------------------------ steps
    def _detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        boxes, scores = self.recognizer.detector.detect_batch([rgb])[0]
        self.seconds["detect"] += time.perf_counter() - start
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64).reshape(-1)

    def _embedder(self, rgb: np.ndarray, boxes: np.ndarray, cache: dict[int, np.ndarray]) -> Callable[[Sequence[int]], Any]:
        """Embeddings of this frame's detections by index, each computed once (the tracker and the names share them)."""

        def embed(indices: Sequence[int]) -> np.ndarray:
            missing = [i for i in dict.fromkeys(indices) if i not in cache]
            if missing:
                start = time.perf_counter()
                embedder = self.recognizer.embedder
                if hasattr(embedder, "aligned_tensors") and hasattr(embedder, "embed_tensors"):
                    tensors, points = embedder.aligned_tensors(rgb, boxes[missing])
                    rows = np.asarray(embedder.embed_tensors(tensors), dtype=np.float32)
                    if points is not None:  # the pose of the face reuses them (landmarks cost more than the network)
                        self._points.update(zip(missing, points))
                else:
                    rows = np.asarray(embed_faces(embedder, rgb, boxes[missing]), dtype=np.float32)
                rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
                cache.update(zip(missing, rows))
                self.seconds["embed"] += time.perf_counter() - start
            return np.stack([cache[i] for i in indices]) if indices else np.zeros((0, 1), np.float32)

        return embed

    def _learn(self, index: int, rgb: np.ndarray, grey: np.ndarray, boxes: np.ndarray, seen: list[Track],
               embed: Callable[[Sequence[int]], np.ndarray], embedded: dict[int, np.ndarray]) -> None:  # fmt: skip
        """Embed the tracks that need it, weigh each face by its quality, and decide their names."""
        wanted = [track for track in seen if self._wants_embedding(index, track, embedded)]
        if not wanted:
            return
        faces = embed([t.detection for t in wanted])
        start = time.perf_counter()
        if all(t.detection in self._points for t in wanted):
            points: Optional[np.ndarray] = np.stack([self._points[t.detection] for t in wanted])
        else:
            points = self._landmarks(rgb, np.array([t.box for t in wanted]))
        kept = []
        for k, track in enumerate(wanted):
            history = self.history[track.id]
            if history.evidence.embeddings and float(faces[k] @ history.evidence.mean) < self.same_person:
                # a cut of the whole frame, or of this face alone: not a bad frame of the same face
                abrupt = self._cut or _thumbnail_change(history.thumbnail, self._thumbnail(track)) > CUT
                if not (history.suspect or abrupt):  # one unlike face may be a bad frame (blur, a turn): the next decides
                    history.suspect = True
                    continue
                # twice unlike, or unlike and a sudden change of the picture (a cut): someone else in this track's box
                track = wanted[k] = self.tracker.split(track, index)
                history = self.history[track.id] = self._new_history(index)
            history.suspect = False
            kept.append(k)
            if points is not None:
                history.pose = max(0.0, 1.0 - pose_offset(points[k]) / MAX_OFFSET)
            history.evidence.add(faces[k], face_quality(grey, track.box) * history.pose)
            history.embedded_at, history.embedded_side = index, min(track.box[2] - track.box[0], track.box[3] - track.box[1])
            history.thumbnail = self._thumbnail(track)
            track.feature = history.evidence.mean
        self.seconds["quality"] += time.perf_counter() - start
        start = time.perf_counter()
        evidence = [self.history[wanted[k].id].evidence for k in kept]
        if not evidence:
            self.seconds["match"] += time.perf_counter() - start
            return
        for one in evidence:
            one.threshold = self.rule.threshold_for(one)
        for one, (name, score) in zip(evidence, self.rule.match(self.recognizer.matcher, evidence)):
            one.decide(name, score, index)
        self.seconds["match"] += time.perf_counter() - start

    def _new_history(self, index: int) -> _History:
        return _History(NameEvidence(float(self.recognizer.matcher.threshold), self.options.confirm, self.options.sure),
                        first=index)  # fmt: skip

    def _wants_embedding(self, index: int, track: Track, embedded: dict[int, np.ndarray]) -> bool:
        """New, unknown but near the threshold, in question, at a cut, resized, changed, due, or embedded already (free)."""
        history = self.history.get(track.id)
        if history is None:
            history = self.history[track.id] = self._new_history(index)
        if track.detection < 0:
            return False
        evidence = history.evidence
        near = evidence.name == UNKNOWN and evidence.score >= evidence.threshold - NEAR  # might become a person soon
        if evidence.embeddings < 2 or near or evidence.deciding or history.suspect or track.detection in embedded or self._cut:
            return True
        side = min(track.box[2] - track.box[0], track.box[3] - track.box[1])
        resized = not 1 / self.options.resize < side / max(history.embedded_side, 1e-9) < self.options.resize
        looks_else = history.thumbnail is not None and _thumbnail_change(history.thumbnail, self._thumbnail(track)) > CHANGED
        return resized or looks_else or index - history.embedded_at >= self.options.embed_every

    def _thumbnail(self, track: Track) -> Optional[np.ndarray]:
        """The face at 16x16 grey: a cheap look, to notice that the face in a box changed (a turn, a swap, a cut)."""
        grey = self._grey
        height, width = grey.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in track.box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return cv2.resize(grey[y1:y2, x1:x2], (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)

    def _trace_back(self, index: int, grey: np.ndarray, new: list[Track]) -> None:
        """Follow each new track's box back through the frames since the last detection still held; then forget them."""
        for track in new:
            history = self.history[track.id]
            for earlier, box, picture in self._backfill.trace(grey, track.box, after=index - self.hold):
                quality = face_quality(picture, box) * history.pose
                history.first, history.frames = min(history.first, earlier), history.frames + 1
                history.quality_sum += quality
                self._earlier.append((earlier, TrackedFace(tuple(float(v) for v in box), track.detection_score,  # type: ignore[arg-type]
                                                           history.evidence.name, float(history.evidence.score), track.id,
                                                           quality)))  # fmt: skip
        self._backfill.forget()

    def _faces(self, index: int, grey: np.ndarray) -> list[TrackedFace]:
        start = time.perf_counter()
        faces = []
        for track in self.tracker.visible:
            history = self.history.get(track.id)
            if history is None:  # a track that no detection frame has seen through _learn (cannot happen; kept safe)
                continue
            quality = face_quality(grey, track.box) * history.pose
            history.frames += 1
            history.last = index
            history.quality_sum += quality
            evidence = history.evidence
            faces.append(TrackedFace(tuple(float(v) for v in track.box), track.detection_score, evidence.name,  # type: ignore[arg-type]
                                     float(evidence.score), track.id, quality))  # fmt: skip
        self.seconds["quality"] += time.perf_counter() - start
        return faces


def _thumbnail_change(before: Optional[np.ndarray], after: Optional[np.ndarray]) -> float:
    """Mean absolute grey difference of two face thumbnails (0 to 255; infinite when one is missing)."""
    if before is None or after is None:
        return float("inf")
    return float(np.abs(before - after).mean())


def _same_person(recognizer: Recognizer, given: Optional[float], calibrated: Optional[float]) -> float:
    """The least cosine similarity of a face to its track's mean embedding (below it, the face is someone else).

    ``given`` (``same_person`` of the options) first; else the gallery's own same-person floor
    (:func:`~facetorch.recognition.track_threshold.same_person_floor`: the 1st percentile of its
    photos against their person's other photos); else the open-set threshold less
    :data:`SAME_PERSON_MARGIN`; other matchers use the embedder's pair threshold when it has one;
    otherwise tracks are never split.
    """
    if given is not None:
        return float(given)
    if calibrated is not None:
        return float(calibrated)
    if getattr(recognizer.matcher, "kind", "") == "open_set":
        return float(recognizer.matcher.threshold) - SAME_PERSON_MARGIN
    threshold = float(getattr(recognizer.embedder, "threshold", float("nan")))
    return threshold if np.isfinite(threshold) else -1.0


def _landmark_finder(embedder: Any) -> Callable[[np.ndarray, np.ndarray], Optional[np.ndarray]]:
    """The 5 landmarks of boxes (for the pose part of quality) where the embedder aligns with them; else None."""
    spec = getattr(embedder, "input", None)
    if getattr(spec, "align", None) != "five_point":
        return lambda image, boxes: None
    from facetorch.data.alignment import landmarks
    from facetorch.models.shape_predictor import load_shape_predictor

    predictor = load_shape_predictor(spec.align_model)  # type: ignore[union-attr]

    def find(image: np.ndarray, boxes: np.ndarray) -> Optional[np.ndarray]:
        return landmarks(image, np.asarray(boxes, dtype=np.float64) - np.array([0.0, 0.0, 1.0, 1.0]), predictor)

    return find


def draw_tracked(frame_bgr: np.ndarray, faces: Sequence[TrackedFace]) -> np.ndarray:
    """A copy of the frame with each face's box and ``#track name score``."""
    out = frame_bgr.copy() if frame_bgr.ndim == 3 else cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    for face in faces:
        draw_label(out, face.box, f"#{face.track} {face.name} {face.score:.2f}", KNOWN_COLOUR if face.known else UNKNOWN_COLOUR)
    return out
