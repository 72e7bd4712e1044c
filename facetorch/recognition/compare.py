"""Tracked recognition against per-frame recognition on one video, in one process: quality and speed.

:func:`compare_tracking` (``tools/benchmark.py --task video``) runs ``gallery.py recognize``'s two
ways over the same video with the same models, alternating their order from one repeat to the
next so that a busy machine slows both alike, scores each against the video's truth
(:func:`~facetorch.recognition.results.score_recognitions`) and reports the frames/s of each
repeat, their medians and their ratio, with the goals of the tracked way checked.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from facetorch.recognition.pipeline import Recognizer
from facetorch.recognition.results import score_recognitions
from facetorch.recognition.runs import recognize_source
from facetorch.recognition.tracked import TrackOptions

__all__ = ["SCORE_KEYS", "compare_tracking"]

SCORE_KEYS = ("detection_rate", "identification_rate", "stranger_accept_rate", "name_changes_per_100", "id_switches",
              "tracks_found", "true_tracks", "face_frames")  # fmt: skip


def compare_tracking(recognizer: Recognizer, video: str | Path, truth: str | Path, output: str | Path,
                     options: Optional[TrackOptions] = None, repeats: int = 2, max_frames: Optional[int] = None,
                     warmup_frames: int = 3) -> dict[str, Any]:  # fmt: skip
    """Per-frame and tracked recognition of ``video``, scored against ``truth``, timed alternately.

    Args:
        recognizer: The detector, embedder and matcher both ways use.
        video: The video (``gallery.py compose --video``'s ``video.avi``).
        truth: Its ``video_truth.csv``.
        output: A new or empty folder for the runs' outputs (``per_frame_<k>/``, ``tracked_<k>/``).
        options: The tracking options (default :class:`TrackOptions`).
        repeats: Runs of each way (the scores of the first; frames/s of all).
        max_frames: Use only the first frames of the video.
        warmup_frames: Frames recognised untimed first (models load lazily).

    Returns:
        ``per_frame`` and ``tracked``: the scores (:data:`SCORE_KEYS`), ``frames_s`` (each repeat),
        ``frames_s_median``, ``seconds_by_stage`` (first repeat); ``speedup`` (ratio of the
        medians); ``goals`` (each with its value and whether it is met).
    """
    options = options or TrackOptions()
    if repeats < 1:
        raise ValueError(f"--repeats must be 1 or more, got {repeats}")
    output = Path(output)
    recognize_source(_fresh(recognizer), str(video), output / "warmup", max_frames=warmup_frames, progress=False,
                     fourcc="MJPG")  # fmt: skip
    runs: dict[str, list[Any]] = {"per_frame": [], "tracked": []}
    for repeat in range(repeats):
        order = ("per_frame", "tracked") if repeat % 2 == 0 else ("tracked", "per_frame")
        for way in order:
            start = time.perf_counter()
            run = recognize_source(_fresh(recognizer), str(video), output / f"{way}_{repeat}", max_frames=max_frames,
                                   progress=False, fourcc="MJPG", track=options if way == "tracked" else None)  # fmt: skip
            runs[way].append((run, time.perf_counter() - start))
    result: dict[str, Any] = {"video": str(video), "frames": runs["tracked"][0][0].frames, "repeats": repeats,
                              "detector": recognizer.detector.name, "threshold": float(recognizer.matcher.threshold),
                              "options": asdict(options)}  # fmt: skip
    for way, done in runs.items():
        score = score_recognitions(truth, Path(done[0][0].csv))
        rates = [run.frames_s for run, _ in done]
        result[way] = {**{k: score.get(k) for k in SCORE_KEYS}, "frames_s": rates, "frames_s_median": statistics.median(rates),
                       "seconds_by_stage": done[0][0].seconds_by_stage}  # fmt: skip
    per_frame, tracked = result["per_frame"], result["tracked"]
    result["speedup"] = tracked["frames_s_median"] / per_frame["frames_s_median"] if per_frame["frames_s_median"] else None
    gain = tracked["identification_rate"] - per_frame["identification_rate"]
    result["goals"] = {
        "identification_not_lower": {"value": gain, "met": gain >= 0},
        "identification_plus_10_points": {"value": gain, "met": gain >= 0.10},
        "strangers_accepted_not_higher": {"value": tracked["stranger_accept_rate"] - per_frame["stranger_accept_rate"],
                                          "met": tracked["stranger_accept_rate"] <= per_frame["stranger_accept_rate"]},
        "name_changes_per_100_at_most_0.5": {"value": tracked["name_changes_per_100"],
                                             "met": tracked["name_changes_per_100"] <= 0.5},
        "frames_s_at_least_3x": {"value": result["speedup"], "met": (result["speedup"] or 0) >= 3.0},
    }  # fmt: skip
    return result


def _fresh(recognizer: Recognizer) -> Recognizer:
    """The same models with their own stage clocks."""
    return Recognizer(recognizer.embedder, recognizer.detector, recognizer.matcher)
