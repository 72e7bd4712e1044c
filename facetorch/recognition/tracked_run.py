"""The tracked run of a video or a camera: frames in, ``recognitions.csv``, ``tracks.csv`` and the annotated video out.

:func:`run_tracked` reads the frames, gives them to a :class:`~facetorch.recognition.tracked.TrackedStream`,
holds the rows for the decision delay (:mod:`~facetorch.recognition.decision_delay`; new tracks'
faces traced back into held frames join them, :mod:`~facetorch.recognition.backfill`) and writes
them in frame order.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import io
from facetorch.recognition.decision_delay import DecisionDelay, HeldFrame, default_delay
from facetorch.recognition.results import CSV_NAME, TRACKED_FIELDS, face_rows
from facetorch.recognition.streams import FOURCC_SUFFIX, FrameReader, Source, VideoSink, atomic_csv, stop_on_signals
from facetorch.recognition.tracked import TRACK_FIELDS, TRACKS_NAME, TrackedFace, TrackedStream, draw_tracked

__all__ = ["TrackedRun", "run_tracked"]


@dataclass
class TrackedRun:
    """What :func:`run_tracked` did: the file written, whether it stopped early, the frames lost, the tracks."""

    written: Path
    stopped: bool
    lost_frames: list[int]
    ended_early: bool
    tracks: int
    tracks_csv: Path


def run_tracked(stream: TrackedStream, source: Source, output: Path, counts: Any, *, max_frames: Optional[int],
                show: Callable[[np.ndarray], bool], fourcc: str, progress: bool, live: bool = False) -> TrackedRun:  # fmt: skip
    """Track the faces of a video or camera: ``recognitions.csv`` (with track and quality), ``tracks.csv``, the video.

    ``counts`` gets ``read += 1`` per frame read and ``add(faces)`` per processed frame.
    ``stream.step`` > 1 processes every N-th frame; the others are written with the last faces drawn.
    The CSV rows and the annotated video wait ``stream.options.decision_delay`` frames for their
    tracks' names (:class:`~facetorch.recognition.decision_delay.DecisionDelay`; None: the default of
    the source's kind); ``show`` gets each frame at once, drawn with the names of that moment when ``live``.
    """
    csv_path, tracks_path = output / CSV_NAME, output / TRACKS_NAME
    video_path = output / f"{source.name}_recognized{FOURCC_SUFFIX.get(fourcc, '.mp4')}"
    reader = FrameReader(source, max_frames)
    total = min(filter(None, (max_frames, source.frame_count)), default=None)
    delay = DecisionDelay(default_delay(source.kind, stream.options.decision_delay), stream.name_of)
    stream.hold = delay.frames
    faces: list[TrackedFace] = []
    stopped = False
    seconds = stream.seconds
    with stop_on_signals() as stop_asked, atomic_csv(csv_path, TRACKED_FIELDS) as rows, \
            VideoSink(video_path, source.fps, fourcc) as video:  # fmt: skip

        def write(held: Sequence[HeldFrame]) -> None:
            for one in held:
                frame, processed = one.payload
                if processed:
                    rows.writerows(face_rows(source.label, one.index, one.faces))
                    counts.add(one.faces)
                video.write(draw_tracked(frame, one.faces))

        frames = iter(io.progress(reader, "recognize", total=total, enabled=progress))
        while True:
            start = time.perf_counter()
            item = next(frames, None)
            seconds["read"] += time.perf_counter() - start
            if item is None:
                break
            if stop_asked():
                stopped = True
                break
            index, frame = item
            counts.read += 1
            processed = index % stream.step == 0
            if processed:
                faces = stream.frame(index, frame)
                delay.add(stream.earlier_faces())
            start = time.perf_counter()
            write(delay.push(index, faces, (frame, processed)))
            asked = show(draw_tracked(frame, faces)) if live else False
            seconds["write"] += time.perf_counter() - start
            if asked:
                stopped = True
                break
        start = time.perf_counter()
        write(delay.drain())  # a stop asked still writes what was processed
        seconds["write"] += time.perf_counter() - start
        track_rows = stream.finish()
        io.write_csv(tracks_path, TRACK_FIELDS, track_rows)
    if reader.lost:
        print(f"gallery.py: {len(reader.lost)} frame(s) of {source.label} could not be read: {_ranges(reader.lost)}"
              + (" (the stream ended early)" if reader.ended_early else ""), file=sys.stderr)  # fmt: skip
    return TrackedRun(video_path if video.frames else output, stopped, reader.lost, reader.ended_early, len(track_rows),
                      tracks_path)  # fmt: skip


def _ranges(indices: Sequence[int]) -> str:
    """``3, 7-9`` for [3, 7, 8, 9]."""
    parts, start = [], None
    for k, value in enumerate(indices):
        start = value if start is None else start
        if k + 1 == len(indices) or indices[k + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)
