"""Sources and outputs that detection and recognition share: images, folders, videos, cameras; CSV, PNG and video.

- :func:`open_source` turns ``--source`` (an image, a folder of images, a video file, a camera
  index) into a :class:`Source`, with a one-line error for a missing path, a folder without
  images, or a video / camera that cannot be opened.
- :func:`stop_on_signals` turns Ctrl-C and SIGTERM into a flag, so a loop finishes its frame and
  closes its files instead of dying in the middle of one.
- :func:`atomic_csv` and :class:`VideoSink` write under hidden temporary names and rename when
  complete (also after a stop), and drop the partial file after an error.
"""

from __future__ import annotations

import csv
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.files import is_image_file

__all__ = ["VIDEO_EXTENSIONS", "FrameReader", "Source", "VideoSink", "atomic_csv", "draw_label", "frame_path", "image_files",
           "is_camera", "open_source", "partial_path", "read_frames", "stop_on_signals", "write_png_bgr"]  # fmt: skip

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
FOURCC_SUFFIX = {"mp4v": ".mp4", "MJPG": ".avi"}


def is_camera(source: str) -> bool:
    """A camera index (``"0"``) rather than a path."""
    return source.isdigit()


def image_files(path: Path) -> list[Path]:
    """One image, or every image under a folder (recursively, sorted)."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if is_image_file(p))


@dataclass
class Source:
    """An opened ``--source``.

    Attributes:
        kind: ``images`` (files), ``video`` (a file) or ``camera``.
        label: What the CSV's ``source`` column says for a frame of a stream (the path, ``camera 0``).
        name: A short name for output files (the video's stem, ``camera0``).
        files: The image files (``images``).
        root: The folder the image files are relative to.
        capture: The open capture (``video``, ``camera``).
        fps: Frames per second of the stream (25 when unknown).
        frame_count: Frames in a video file (``None`` when unknown, and for a camera).
    """

    kind: Literal["images", "video", "camera"]
    label: str
    name: str
    files: list[Path] = field(default_factory=list)
    root: Optional[Path] = None
    capture: Optional[cv2.VideoCapture] = None
    fps: float = 25.0
    frame_count: Optional[int] = None

    def release(self) -> None:
        """Close the capture, if any."""
        if self.capture is not None:
            self.capture.release()


def _open_capture(target: int | str, label: str) -> cv2.VideoCapture:
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one-line error says it; not OpenCV's warnings too
    try:
        capture = cv2.VideoCapture(target)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if not capture.isOpened():
        capture.release()
        if isinstance(target, int):
            raise ValueError(f"--source {target}: camera {target} cannot be opened (no such camera on this machine, "
                             "or another program holds it); expected a camera index that exists, or a file")  # fmt: skip
        raise ValueError(f"--source {label}: cannot be opened by OpenCV {cv2.__version__} (expected a readable video or camera)")
    return capture


def open_source(source: str) -> Source:
    """Open ``source``: a camera index, a video file (by extension), an image, or a folder of images.

    Raises:
        FileNotFoundError: the path does not exist (and is not a camera index).
        ValueError: a folder without images, or a video / camera that cannot be opened.
    """
    if is_camera(source):
        capture = _open_capture(int(source), f"camera {source}")
        return Source("camera", f"camera {source}", f"camera{source}", capture=capture, fps=_fps(capture))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"--source {source!r} does not exist (expected an image, a folder, a video file or a camera index)"
        )
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        capture = _open_capture(str(path), str(path))
        known = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return Source("video", str(path), path.stem, capture=capture, fps=_fps(capture), frame_count=known if known > 0 else None)
    if path.is_file() and not is_image_file(path):
        raise ValueError(f"--source {source!r} is neither an image nor a video by its extension (videos: "
                         f"{', '.join(VIDEO_EXTENSIONS)}); give an image, a folder of images, a video or a camera "
                         "index")  # fmt: skip
    files = image_files(path)
    if not files:
        raise ValueError(f"--source {str(path)!r} holds no image and is not a video ({', '.join(VIDEO_EXTENSIONS)})")
    return Source("images", str(path), path.stem, files=files, root=path if path.is_dir() else path.parent)


def _fps(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if 0 < fps < 1000 else 25.0


def read_frames(capture: cv2.VideoCapture, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    """The BGR frames of an open capture, up to ``max_frames``."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield frame


class FrameReader:
    """The frames of a stream with their index over all frames of the source, past unreadable ones.

    OpenCV's ``read`` fails on a frame it cannot decode and goes on with the next one at the next
    call, so a failed read is one lost frame; a good frame's timestamp (``CAP_PROP_POS_MSEC``,
    from the first frame's) corrects the count where a decoder skipped more. The reader stops
    after ``patience`` failures in a row (a file that ends early, a camera that went away), or at
    ``max_frames``. ``lost`` lists the indices of the frames it could not read (of a file's
    announced frames, those after an early end too).

    Args:
        source: An opened video or camera.
        max_frames: Stop after this many frames (read or lost).
        patience: Failed reads in a row that end the stream.
    """

    def __init__(self, source: Source, max_frames: Optional[int] = None, patience: int = 25) -> None:
        self.source = source
        self.max_frames = max_frames
        self.patience = patience
        self.lost: list[int] = []
        self.ended_early = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        capture, fps, kind = self.source.capture, self.source.fps, self.source.kind
        known = self.source.frame_count
        limit = min(filter(None, (self.max_frames, known)), default=None)
        index, failed, start_ms = 0, [], None  # the next frame's index; the current run of failed reads
        while limit is None or index < limit:
            ok, frame = capture.read() if capture is not None else (False, None)
            if not ok:
                if kind == "video" and known is None:  # a file of unknown length: a failure is its end
                    break
                failed.append(index)
                index += 1
                if len(failed) >= self.patience:
                    break
                continue
            stamp = capture.get(cv2.CAP_PROP_POS_MSEC)
            if start_ms is None:
                start_ms = stamp
            elif failed and kind == "video" and stamp > 0:  # the timestamp says where we are, if a decoder skipped more
                index = max(index, int(round((stamp - start_ms) * fps / 1000.0)))
            if failed:
                self.lost.extend(range(failed[0], index))
            failed = []
            yield index, frame
            index += 1
        if failed:  # the stream ended in failures: a file's frames up to its announced end are lost
            self.ended_early = True
            if kind == "video":
                self.lost.extend(range(failed[0], limit if limit is not None else index))


def frame_path(output: Path, root: Path, file: Path, suffix: str = "") -> Path:
    """Where the annotated PNG of an image file goes: its place under ``root``, ``<stem>_<ext><suffix>.png``."""
    relative = file.relative_to(root)
    return output / relative.parent / f"{relative.stem}_{relative.suffix[1:].lower()}{suffix}.png"


# --------------------------------------------------------------------------------------------
# Stopping cleanly
# --------------------------------------------------------------------------------------------


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C (SIGINT) and SIGTERM into a flag, so the loop finishes its frame and its files."""
    stop = {"asked": False}

    def handler(signum: int, frame: Any) -> None:
        stop["asked"] = True

    installed: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                installed[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: keep the default behaviour
                pass
        yield lambda: stop["asked"]
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------


def partial_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that keeps its extension (OpenCV picks the container by it)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def atomic_csv(path: Path, fields: Sequence[str]) -> Iterator[csv.DictWriter]:
    """A CSV written under a temporary name and renamed when the block ends, also after Ctrl-C."""
    partial = partial_path(path)
    handle = open(partial, "w", newline="", encoding="utf-8")
    try:
        writer = csv.DictWriter(handle, fieldnames=list(fields), restval="")
        writer.writeheader()
        yield writer
        handle.close()
        os.replace(partial, path)
    finally:
        if not handle.closed:
            handle.close()
        if partial.exists():
            partial.unlink()


class VideoSink:
    """An annotated video, opened at its first frame under a temporary name and renamed by :meth:`close`.

    Use as a context manager: leaving the block normally (or after a stop) keeps the video; an
    exception drops the partial file.

    Args:
        path: The final file (its extension should match the codec: ``.mp4`` for mp4v, ``.avi`` for MJPG).
        fps: Frames per second.
        fourcc: ``mp4v`` or ``MJPG``.
    """

    def __init__(self, path: Path, fps: float, fourcc: str = "mp4v") -> None:
        self.path = path
        self.partial = partial_path(path)
        self.fps = fps
        self.fourcc = fourcc
        self.frames = 0
        self._writer: Optional[cv2.VideoWriter] = None

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one BGR frame (all frames of one size)."""
        if self._writer is None:
            height, width = frame_bgr.shape[:2]
            self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
            if not self._writer.isOpened():
                raise ValueError(f"OpenCV cannot write {self.fourcc} video to {str(self.path)!r}; try --fourcc MJPG")
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> Optional[Path]:
        """Finish the video and give it its name; ``None`` when no frame was written."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self.partial, self.path)
        return self.path

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None:
            self.close()
            return
        if self._writer is not None:  # an error mid-stream: drop the partial video
            self._writer.release()
            self._writer = None
        if self.partial.exists():
            self.partial.unlink()


def write_png_bgr(path: Path, picture_bgr: np.ndarray) -> None:
    """Write a BGR picture as PNG, atomically."""
    io.write_png(path, cv2.cvtColor(picture_bgr, cv2.COLOR_BGR2RGB))


def draw_label(picture_bgr: np.ndarray, box: Sequence[float], text: str, colour: tuple[int, int, int]) -> None:
    """Draw a box and a text above it, in place; the text is sized to the box (a small face gets a small label)."""
    thickness = max(1, round(max(picture_bgr.shape[:2]) / 480))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(picture_bgr, (x1, y1), (x2, y2), colour, thickness)
    scale = float(np.clip((x2 - x1) / 160, 0.35, 1.2))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = y1 - height - baseline - 2 if y1 - height - baseline - 2 >= 0 else y2 + 2
    cv2.rectangle(picture_bgr, (x1, top), (x1 + width + 2, top + height + baseline + 2), colour, cv2.FILLED)
    cv2.putText(picture_bgr, text, (x1 + 1, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
