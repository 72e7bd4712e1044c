"""Tracked against per-frame recognition on one video, in one process: names and speed.

:func:`compare_tracking` (``tools/benchmark.py --task video``) gives every frame of a video to
``gallery.py recognize``'s two ways (per-frame :class:`~facetorch.recognition.pipeline.Recognizer`,
tracked :class:`~facetorch.recognition.tracked.TrackedStream`) with the same models, in lockstep and
alternating order, so that a busy machine slows both alike; scores each against the video's truth
(:func:`~facetorch.recognition.results.score_recognitions`) and reports both frames/s, their ratio
and the goals of the tracked way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.evaluation.tracking import track_metrics
from facetorch.recognition.decision_delay import DecisionDelay, HeldFrame, default_delay
from facetorch.recognition.pipeline import Recognizer, embed_faces
from facetorch.recognition.results import CSV_FIELDS, CSV_NAME, TRACKED_FIELDS, face_rows, read_rows, score_recognitions
from facetorch.recognition.streams import FrameReader, open_source
from facetorch.recognition.tracked import TRACK_FIELDS, TRACKS_NAME, TrackedStream, TrackOptions
from facetorch.recognition.tracking import FaceTracker

__all__ = ["SCORE_KEYS", "compare_tracking", "replay_gaps"]

SCORE_KEYS = ("detection_rate", "identification_rate", "stranger_accept_rate", "name_changes_per_100", "id_switches",
              "tracks_found", "true_tracks", "face_frames")  # fmt: skip


def compare_tracking(recognizer: Recognizer, video: str | Path, truth: str | Path, output: str | Path,
                     options: Optional[TrackOptions] = None, max_frames: Optional[int] = None) -> dict[str, Any]:  # fmt: skip
    """Per-frame and tracked recognition of ``video`` in lockstep, scored against ``truth``.

    Each frame is given to both ways, in alternating order, each timed alone, so a busy machine
    slows both alike; the annotated video is not drawn (the same cost for both ways in
    ``gallery.py recognize``). The frames/s are those of the recognition itself. The tracked rows
    wait for a video file's decision delay (``options.decision_delay``, else its default), as
    ``gallery.py recognize``'s do, inside the tracked clock.

    Args:
        recognizer: The detector, embedder and matcher both ways use.
        video: The video (``gallery.py compose --video``'s ``video.avi``).
        truth: Its ``video_truth.csv``.
        output: A new or empty folder: ``per_frame/recognitions.csv``, ``tracked/recognitions.csv`` and
            ``tracked/tracks.csv``.
        options: The tracking options (default :class:`TrackOptions`).
        max_frames: Use only the first frames of the video.

    Returns:
        ``per_frame`` and ``tracked``: the scores (:data:`SCORE_KEYS`), ``frames_s``, ``seconds`` and
        ``seconds_by_stage``; ``speedup`` (the ratio of frames/s); ``goals`` (each with its value and
        whether it is met).
    """
    options = options or TrackOptions()
    options.check()
    output = io.check_output_folder(output)
    ways = {"per_frame": _fresh(recognizer), "tracked": _fresh(recognizer)}
    stream = TrackedStream(ways["tracked"], options)
    delay = DecisionDelay(default_delay("video", options.decision_delay), stream.name_of)  # a file: its rows may wait
    stream.hold = delay.frames
    seconds = {"per_frame": 0.0, "tracked": 0.0}
    rows: dict[str, list[dict[str, Any]]] = {"per_frame": [], "tracked": []}
    source = open_source(str(video))
    try:
        reader = FrameReader(source, max_frames)
        blank = np.zeros((200, 200, 3), np.uint8)  # models load lazily: not in either clock
        ways["per_frame"]([blank])
        embed_faces(recognizer.embedder, blank, np.array([[50.0, 50.0, 150.0, 150.0]]))
        frames = 0
        for frames, (index, frame) in enumerate(reader, start=1):
            for way in ("per_frame", "tracked") if frames % 2 else ("tracked", "per_frame"):
                start = time.perf_counter()
                if way == "per_frame":
                    faces: Any = ways[way]([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])[0]
                    done = [HeldFrame(index, faces)]
                else:
                    faces = stream.frame(index, frame)
                    delay.add(stream.earlier_faces())
                    done = delay.push(index, faces)
                seconds[way] += time.perf_counter() - start
                for held in done:
                    rows[way].extend(face_rows(source.label, held.index, held.faces))
        for held in delay.drain():
            rows["tracked"].extend(face_rows(source.label, held.index, held.faces))
    finally:
        source.release()
    for way, fields in (("per_frame", CSV_FIELDS), ("tracked", TRACKED_FIELDS)):
        (output / way).mkdir(parents=True, exist_ok=True)
        io.write_csv(output / way / CSV_NAME, fields, rows[way])
    io.write_csv(output / "tracked" / TRACKS_NAME, TRACK_FIELDS, stream.finish())
    result: dict[str, Any] = {"video": str(video), "frames": frames, "detector": recognizer.detector.name,
                              "threshold": float(recognizer.matcher.threshold), "options": asdict(options),
                              "decision_delay": delay.frames}  # fmt: skip
    for way in ways:
        score = score_recognitions(truth, output / way / CSV_NAME)
        result[way] = {**{k: score.get(k) for k in SCORE_KEYS}, "seconds": round(seconds[way], 3),
                       "frames_s": round(frames / seconds[way], 3) if seconds[way] else None,
                       "seconds_by_stage": {k: round(v, 3) for k, v in ways[way].seconds.items()}}  # fmt: skip
    per_frame, tracked = result["per_frame"], result["tracked"]
    result["speedup"] = round(seconds["per_frame"] / seconds["tracked"], 3) if seconds["tracked"] else None
    gain = tracked["identification_rate"] - per_frame["identification_rate"]
    result["goals"] = {
        "identification_not_lower": {"value": gain, "met": gain >= 0},
        "identification_plus_10_points": {"value": gain, "met": gain >= 0.10},
        "strangers_accepted_not_higher": {"value": tracked["stranger_accept_rate"] - per_frame["stranger_accept_rate"],
                                          "met": not tracked["stranger_accept_rate"] > per_frame["stranger_accept_rate"]},
        "name_changes_per_100_at_most_0.5": {"value": tracked["name_changes_per_100"],
                                             "met": tracked["name_changes_per_100"] <= 0.5},
        "frames_s_at_least_3x": {"value": result["speedup"], "met": (result["speedup"] or 0) >= 3.0},
    }  # fmt: skip
    return result


def _fresh(recognizer: Recognizer) -> Recognizer:
    """The same models with their own stage clocks."""
    return Recognizer(recognizer.embedder, recognizer.detector, recognizer.matcher)


def replay_gaps(detections: str | Path, truth: str | Path, gaps: Sequence[int], detect_every: int = 3) -> dict[int, Any]:
    """The tracker alone, replayed on a per-frame run's detections, for several ``max_gap`` values.

    Boxes from ``detections`` (a ``recognitions.csv`` of ``--no_track``) are given to a
    :class:`~facetorch.recognition.tracking.FaceTracker` every ``detect_every`` frames (by box
    alone: no frames, no flow, no appearance), and the tracks are scored against ``truth`` at those
    frames: how many tracks were found and how often a true track's id changed.
    """
    found = read_rows(detections, "--recognitions")
    by_frame: dict[int, list[list[float]]] = {}
    for row in found:
        by_frame.setdefault(int(row["frame"]), []).append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    last = max([int(r["frame"]) for r in read_rows(truth, "--truth")] + list(by_frame), default=-1)
    report = {}
    for gap in gaps:
        tracker, rows = FaceTracker(max_gap=gap), []
        for frame in range(0, last + 1):
            tracker.predict()
            if frame % detect_every == 0:
                boxes = np.array(by_frame.get(frame, []), dtype=float).reshape(-1, 4)
                for track in tracker.update(frame, boxes, np.ones(len(boxes))):
                    rows.append({"source": "", "frame": frame, **dict(zip(("x1", "y1", "x2", "y2"), track.box)),
                                 "name": "unknown", "track": track.id})  # fmt: skip
        truth_rows = [r for r in read_rows(truth, "--truth") if int(r["frame"]) % detect_every == 0]
        scored = track_metrics([{"key": int(r["frame"]), "box": [float(r[k]) for k in ("x1", "y1", "x2", "y2")],
                                 "name": r["name"], "enrolled": r["enrolled"] == "1", "track": r["track"]} for r in truth_rows],
                               [{"key": r["frame"], "box": [r["x1"], r["y1"], r["x2"], r["y2"]], "name": r["name"],
                                 "track": r["track"]} for r in rows])  # fmt: skip
        report[gap] = {"tracks_found": scored["tracks_found"], "true_tracks": scored["true_tracks"],
                       "id_switches": scored["id_switches"], "face_frames_found": scored["face_frames_found"]}  # fmt: skip
    return report
