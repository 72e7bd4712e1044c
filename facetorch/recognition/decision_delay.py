"""A bounded decision delay: each frame's rows wait a few frames and go out with their tracks' settled names.

A track's name is decided from its evidence as the video goes (:mod:`~facetorch.recognition.evidence`):
a new track is ``unknown`` until its mean embedding clears the threshold, often a few embeddings
later, and a split piece of a track starts over. A camera's live label cannot wait, but a video
file's rows can: :class:`DecisionDelay` holds every processed frame for ``frames`` frames of the
source, then hands it on with each face's name and score replaced by its track's name and score at
that moment (the evidence of up to ``frames`` more frames; a track that ended before keeps its
final name). Frames come out in the order they went in, so the CSV stays in frame order.

Nothing is looked up but the track's own evidence: the delay moves each track's decision earlier
by at most ``frames`` frames; it does not compare tracks with each other or with the truth.
Memory: the held frames (``frames`` pictures of the source when the annotated video is drawn from them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

__all__ = ["CAMERA_DELAY", "FILE_DELAY", "DecisionDelay", "HeldFrame", "default_delay"]

FILE_DELAY = 45  # frames a video file's rows wait by default (docs/video.md measures 0 to 45 and the whole track)
CAMERA_DELAY = 0  # a camera's rows go out live


def default_delay(kind: str, given: Optional[int]) -> int:
    """``given`` (``--decision_delay``) when set, else :data:`CAMERA_DELAY` for a camera, :data:`FILE_DELAY` otherwise."""
    if given is not None:
        return int(given)
    return CAMERA_DELAY if kind == "camera" else FILE_DELAY


@dataclass
class HeldFrame:
    """One processed frame while it waits: its index, its faces (tracked faces) and what the caller keeps with it."""

    index: int
    faces: Sequence[Any]
    payload: Any = None


class DecisionDelay:
    """Hold processed frames for ``frames`` frames, then release them with their tracks' names as they are then.

    Args:
        frames: Frames of the source a frame waits (0: released at once, with the names of that moment).
        name_of: A track id's current ``(name, score)``.
    """

    def __init__(self, frames: int, name_of: Callable[[int], tuple[str, float]]) -> None:
        if frames < 0:
            raise ValueError(f"--decision_delay must be 0 or more frames, got {frames}")
        self.frames = frames
        self.name_of = name_of
        self._held: deque[HeldFrame] = deque()

    def push(self, index: int, faces: Sequence[Any], payload: Any = None) -> list[HeldFrame]:
        """Hold frame ``index``; returns the frames due now (``index`` less ``frames`` or earlier), oldest first."""
        self._held.append(HeldFrame(index, faces, payload))
        due = []
        while self._held and self._held[0].index + self.frames <= index:
            due.append(self._settle(self._held.popleft()))
        return due

    def add(self, earlier: Sequence[tuple[int, Any]]) -> int:
        """Add faces found later to the frames still held: ``(index, face)`` pairs; returns how many were added.

        A face of a frame released already is dropped (with no delay, every such face is).
        """
        held = {one.index: one for one in self._held}
        added = 0
        for index, face in earlier:
            if index in held:
                held[index].faces = [*held[index].faces, face]
                added += 1
        return added

    def drain(self) -> list[HeldFrame]:
        """Every frame still held (the stream is over), oldest first."""
        due = [self._settle(held) for held in self._held]
        self._held.clear()
        return due

    def __len__(self) -> int:
        return len(self._held)

    def _settle(self, held: HeldFrame) -> HeldFrame:
        faces = []
        for face in held.faces:
            name, score = self.name_of(face.track)
            faces.append(replace(face, name=name, score=score))
        return HeldFrame(held.index, faces, held.payload)
