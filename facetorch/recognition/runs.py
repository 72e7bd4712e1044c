"""Recognise every face of photos, folders, videos and a camera, and write what was found.

:func:`recognize_source` writes annotated PNGs (images) or an annotated video (video, camera) and
``recognitions.csv`` (:mod:`facetorch.recognition.results`) with one row per face (with ``track``
and ``quality`` when a stream is tracked: :mod:`facetorch.recognition.tracked`), and stops
cleanly on Ctrl-C / SIGTERM (the frame in progress is finished; the video and the CSV are closed
and renamed into place).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.images import ImageReadError, read_image
from facetorch.recognition.decision_delay import default_delay
from facetorch.recognition.pipeline import Face, Recognizer, draw_faces
from facetorch.recognition.results import CSV_FIELDS, CSV_NAME, face_rows
from facetorch.recognition.streams import (
    FOURCC_SUFFIX,
    Source,
    VideoSink,
    atomic_csv,
    frame_path,
    open_source,
    read_frames,
    stop_on_signals,
    write_png_bgr,
)
from facetorch.recognition.tracked import TrackedStream, TrackOptions
from facetorch.recognition.tracked_run import run_tracked

__all__ = ["RecognitionRun", "check_show", "recognize_source"]

WINDOW = "facetorch recognize"


@dataclass
class RecognitionRun:
    """What a run wrote and how fast it went (frames and faces per second of the whole loop)."""

    frames: int
    frames_read: int
    faces: int
    known: int
    unknown: int
    seconds: float
    frames_s: float
    faces_s: float
    detect_s: float
    embed_s: float
    match_s: float
    output: str
    csv: str
    stopped_early: bool
    detector: str
    matcher: str
    threshold: float
    unreadable: list[str] = field(default_factory=list)
    tracked: bool = False
    detect_every: Optional[int] = None
    embed_every: Optional[int] = None
    decision_delay: Optional[int] = None
    tracks: Optional[int] = None
    tracks_csv: Optional[str] = None
    lost_frames: list[int] = field(default_factory=list)
    ended_early: bool = False
    seconds_by_stage: dict[str, float] = field(default_factory=dict)


def check_show() -> None:
    """Refuse ``--show`` where OpenCV has no GUI (``opencv-python-headless``), before any work.

    Raises:
        ValueError: no window can be opened.
    """
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as error:
        reason = " ".join(str(error).split())[-160:]
        raise ValueError(f"--show needs an OpenCV built with a GUI; this one ({cv2.__version__}) cannot open a window "
                         f"({reason}); run without --show (the annotated output is written either way)") from error  # fmt: skip


class _Window:
    """The ``--show`` window: shows a frame; ``q`` or Esc asks to stop."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.closed = False

    def show(self, frame_bgr: np.ndarray) -> bool:
        """Show the frame; ``True`` when the user asked to stop."""
        if not self.enabled:
            return False
        cv2.imshow(WINDOW, frame_bgr)
        return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled and not self.closed:
            cv2.destroyWindow(WINDOW)
            self.closed = True


def recognize_source(
    recognizer: Recognizer,
    source: str | Source,
    output: str | Path,
    *,
    overwrite: bool = False,
    every: int = 1,
    max_frames: Optional[int] = None,
    batch_size: int = 1,
    show: bool = False,
    fourcc: str = "mp4v",
    progress: bool = True,
    track: Optional[TrackOptions] = None,
) -> RecognitionRun:
    """Recognise every face in ``source``; write annotated outputs and ``recognitions.csv`` to ``output``.

    Args:
        recognizer: Detector, embedder and matcher.
        source: An image, a folder of images (searched recursively), a video file, a camera index,
            or a :class:`~facetorch.recognition.streams.Source` opened already.
        output: Output folder (new or empty unless ``overwrite``).
        overwrite: Write into a non-empty folder.
        every: Recognise every N-th frame of a stream; the frames between are written with the
            last faces drawn (and have no CSV rows).
        max_frames: Stop a stream after reading this many frames.
        batch_size: Frames of a stream given to the detector at once (for a GPU).
        show: Show the annotated frames in a window (``q`` stops).
        fourcc: Codec of the annotated video: ``mp4v`` (``.mp4``) or ``MJPG`` (``.avi``).
        progress: Show a progress bar (on a terminal).
        track: Track the faces of a video or camera with these options (``None``: decide each frame
            alone, as before 0.2); images are never tracked.

    Raises:
        FileNotFoundError: ``source`` does not exist (and is not a camera index).
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: no image in a folder, a video / camera that cannot be opened, bad ``every``.
    """
    for flag, value in (("--every", every), ("--batch_size", batch_size), ("--max_frames", max_frames)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be 1 or more, got {value}")
    output = io.check_output_folder(output, overwrite)
    opened = open_source(source) if isinstance(source, str) else source
    window = _Window(show)
    try:
        output.mkdir(parents=True, exist_ok=True)
        if opened.kind == "images":
            return _recognize_images(recognizer, opened, output, window, progress)
        if track is not None:
            return _track_stream(recognizer, opened, output, track, every, max_frames, window, fourcc, progress)
        return _recognize_stream(recognizer, opened, output, every, max_frames, batch_size, window, fourcc, progress)
    finally:
        opened.release()
        window.close()


class _Counts:
    def __init__(self) -> None:
        self.frames = self.read = self.faces = self.known = 0
        self.start = time.perf_counter()

    def add(self, faces: Sequence[Face]) -> None:
        self.frames += 1
        self.faces += len(faces)
        self.known += sum(face.known for face in faces)


def _recognize_images(recognizer: Recognizer, source: Source, output: Path, window: _Window, progress: bool) -> RecognitionRun:
    counts, unreadable, stopped = _Counts(), [], False
    csv_path = output / CSV_NAME
    with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as rows:
        for index, file in enumerate(io.progress(source.files, "recognize", enabled=progress)):
            if stop_asked():
                stopped = True
                break
            counts.read += 1
            try:
                image = read_image(file, 3)
            except ImageReadError as error:
                print(f"gallery.py: skipped {file}: {error}", file=sys.stderr)
                unreadable.append(str(file))
                continue
            (faces,) = recognizer([image])
            annotated = draw_faces(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), faces)
            write_png_bgr(frame_path(output, source.root, file), annotated)  # type: ignore[arg-type]
            rows.writerows(face_rows(str(file), index, faces))
            counts.add(faces)
            if window.show(annotated):
                stopped = True
                break
    return _summary(recognizer, counts, output, csv_path, stopped, unreadable)


def _recognize_stream(
    recognizer: Recognizer, source: Source, output: Path, every: int, max_frames: Optional[int], batch_size: int,
    window: _Window, fourcc: str, progress: bool,
) -> RecognitionRun:  # fmt: skip
    counts, stopped = _Counts(), False
    csv_path = output / CSV_NAME
    video_path = output / f"{source.name}_recognized{FOURCC_SUFFIX.get(fourcc, '.mp4')}"
    total = min(filter(None, (max_frames, source.frame_count)), default=None)
    latest: list[Face] = []
    pending: list[tuple[int, np.ndarray, bool]] = []  # (frame index, BGR frame, recognised?)

    def flush(rows: Any, video: VideoSink) -> bool:
        """Recognise the pending key frames in one batch, then write every pending frame; True: stop asked in the window."""
        nonlocal latest
        keys = [frame for _, frame, key in pending if key]
        results = iter(recognizer([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in keys]) if keys else [])
        asked = False
        for index, frame, key in pending:
            if key:
                latest = next(results)
                rows.writerows(face_rows(source.label, index, latest))
                counts.add(latest)
            annotated = draw_faces(frame, latest)
            video.write(annotated)
            asked = window.show(annotated) or asked
        pending.clear()
        return asked

    with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as rows, \
            VideoSink(video_path, source.fps, fourcc) as video:  # fmt: skip
        for index, frame in enumerate(io.progress(read_frames(source.capture, max_frames), "recognize", total=total,
                                                  enabled=progress)):  # fmt: skip
            if stop_asked():
                stopped = True
                break
            counts.read += 1
            pending.append((index, frame, index % every == 0))
            if sum(key for _, _, key in pending) >= batch_size and flush(rows, video):
                stopped = True
                break
        if pending:
            stopped = flush(rows, video) or stopped
    written = video_path if video.frames else output
    return _summary(recognizer, counts, written, csv_path, stopped, [])


def _track_stream(recognizer: Recognizer, source: Source, output: Path, options: TrackOptions, every: int,
                  max_frames: Optional[int], window: _Window, fourcc: str, progress: bool) -> RecognitionRun:  # fmt: skip
    counts = _Counts()
    stream = TrackedStream(recognizer, options, step=every)
    done = run_tracked(stream, source, output, counts, max_frames=max_frames, show=window.show, fourcc=fourcc,
                       progress=progress, live=window.enabled)  # fmt: skip
    run = _summary(recognizer, counts, done.written, output / CSV_NAME, done.stopped, [])
    run.tracked, run.detect_every, run.embed_every = True, options.detect_every, options.embed_every
    run.tracks, run.tracks_csv = done.tracks, str(done.tracks_csv)
    run.decision_delay = default_delay(source.kind, options.decision_delay)
    run.lost_frames, run.ended_early = done.lost_frames, done.ended_early
    return run


def _summary(recognizer: Recognizer, counts: _Counts, output: Path, csv_path: Path, stopped: bool,
             unreadable: list[str]) -> RecognitionRun:  # fmt: skip
    seconds = time.perf_counter() - counts.start
    return RecognitionRun(
        frames=counts.frames,
        frames_read=counts.read,
        faces=counts.faces,
        known=counts.known,
        unknown=counts.faces - counts.known,
        seconds=round(seconds, 3),
        frames_s=round(counts.frames / seconds, 3) if seconds > 0 else 0.0,
        faces_s=round(counts.faces / seconds, 3) if seconds > 0 else 0.0,
        detect_s=round(recognizer.seconds["detect"], 3),
        embed_s=round(recognizer.seconds["embed"], 3),
        match_s=round(recognizer.seconds["match"], 3),
        output=str(output),
        csv=str(csv_path),
        stopped_early=stopped,
        detector=recognizer.detector.name,
        matcher=getattr(recognizer.matcher, "kind", type(recognizer.matcher).__name__),
        threshold=float(recognizer.matcher.threshold),
        unreadable=unreadable,
        seconds_by_stage={stage: round(value, 3) for stage, value in recognizer.seconds.items()},
    )
