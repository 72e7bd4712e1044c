"""Run a trained single-face detector on an image, a folder, a video file or a camera.

The library side of ``tools/detect.py`` (:mod:`facetorch.cli.detect`). Images give annotated PNGs; a video or a camera gives
an annotated video. Either way a CSV holds one row per frame (``source, frame, score, face,
x1, y1, x2, y2`` with the box in the frame's pixels, empty when no face is found). Nothing is
shown on screen (headless). A stream stops at its end, after ``max_frames``, or on Ctrl-C /
SIGTERM: the frame in progress is finished and the video and CSV are closed properly. Outputs
are written under temporary names and renamed when complete, and an existing non-empty output
folder is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2

from facetorch import io
from facetorch.data.images import ImageReadError, read_image
from facetorch.inference.detection import Detection, Detector, draw
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

__all__ = ["CSV_FIELDS", "CSV_NAME", "DetectionRun", "detect_source"]

CSV_NAME = "detections.csv"
CSV_FIELDS = ["source", "frame", "score", "face", "x1", "y1", "x2", "y2", "error"]


@dataclass
class DetectionRun:
    """What a run wrote and how fast it went (``fps``: frames per second of the whole loop at batch 1)."""

    frames: int
    faces: int
    seconds: float
    fps: float
    model_fps: float
    output: str
    csv: str
    stopped_early: bool
    unreadable: list[str] = field(default_factory=list)


def _csv_row(source: str, frame: int, detection: Detection) -> dict[str, Any]:
    box = [f"{v:.1f}" for v in detection.box] if detection.box is not None else ["", "", "", ""]
    return {"source": source, "frame": frame, "score": f"{detection.score:.6f}", "face": int(detection.face),
            **dict(zip(("x1", "y1", "x2", "y2"), box))}  # fmt: skip


def detect_source(
    detector: Detector,
    source: str,
    output: str | Path,
    *,
    overwrite: bool = False,
    max_frames: Optional[int] = None,
    fourcc: str = "mp4v",
    progress: bool = True,
) -> DetectionRun:
    """Detect faces in ``source`` and write annotated outputs plus ``detections.csv`` to ``output``.

    Args:
        detector: The loaded detector.
        source: An image file, a folder of images (searched recursively), a video file, or a
            camera index (``"0"``).
        output: Output folder (new or empty unless ``overwrite``).
        overwrite: Write into a non-empty folder (files of the same name are replaced).
        max_frames: Stop a video or camera after this many frames.
        fourcc: Codec of the annotated video: ``mp4v`` (``.mp4``) or ``MJPG`` (``.avi``).
        progress: Show a progress bar (on a terminal).

    Raises:
        FileNotFoundError: ``source`` does not exist (and is not a camera index).
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: no image in a folder, or a video / camera that cannot be opened.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max_frames must be 1 or more, got {max_frames}")
    output = Path(output)
    io.check_output_folder(output, overwrite)
    opened = open_source(source)
    if opened.kind == "images":
        return _detect_images(detector, opened, output, progress)
    return _detect_stream(detector, opened, output, max_frames, fourcc, progress)


def _detect_images(detector: Detector, source: Source, output: Path, progress: bool) -> DetectionRun:
    output.mkdir(parents=True, exist_ok=True)
    csv_path = output / CSV_NAME
    frames = faces = 0
    start = time.perf_counter()
    stopped = False
    unreadable: list[str] = []
    with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as writer:
        for file in io.progress(source.files, "detect", enabled=progress):
            if stop_asked():
                stopped = True
                break
            try:  # the one reader: upright (EXIF), any bit depth; a broken file is reported, not fatal
                frame = cv2.cvtColor(read_image(file, 3), cv2.COLOR_RGB2BGR)
            except ImageReadError as error:
                writer.writerow({"source": str(file), "frame": frames, "error": str(error)})
                unreadable.append(str(file))
                continue
            detection = detector(frame)
            write_png_bgr(frame_path(output, source.root, file), draw(frame, detection))
            writer.writerow(_csv_row(str(file), frames, detection))
            frames += 1
            faces += int(detection.face)
    return _summary(detector, frames, faces, start, output, csv_path, stopped, unreadable)


def _detect_stream(
    detector: Detector, source: Source, output: Path, max_frames: Optional[int], fourcc: str, progress: bool
) -> DetectionRun:
    output.mkdir(parents=True, exist_ok=True)
    video_path, csv_path = output / f"{source.name}_detected{FOURCC_SUFFIX.get(fourcc, '.mp4')}", output / CSV_NAME
    frames = faces = 0
    stopped = False
    start = time.perf_counter()
    total = min(filter(None, (max_frames, source.frame_count)), default=None)
    try:
        with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as rows, \
                VideoSink(video_path, source.fps, fourcc) as video:  # fmt: skip
            for frame in io.progress(read_frames(source.capture, max_frames), "detect", total=total, enabled=progress):
                if stop_asked():
                    stopped = True
                    break
                detection = detector(frame)
                video.write(draw(frame, detection))
                rows.writerow(_csv_row(source.label, frames, detection))
                frames += 1
                faces += int(detection.face)
    finally:
        source.release()
    return _summary(detector, frames, faces, start, video_path if frames else output, csv_path, stopped)


def _summary(
    detector: Detector, frames: int, faces: int, start: float, output: Path, csv_path: Path, stopped: bool,
    unreadable: Optional[list[str]] = None,
) -> DetectionRun:  # fmt: skip
    seconds = time.perf_counter() - start
    return DetectionRun(
        frames=frames,
        faces=faces,
        seconds=round(seconds, 3),
        fps=round(frames / seconds, 2) if seconds > 0 else 0.0,
        model_fps=round(frames / detector.model_seconds, 2) if detector.model_seconds > 0 else 0.0,
        output=str(output),
        csv=str(csv_path),
        stopped_early=stopped,
        unreadable=unreadable or [],
    )
