"""Faces in the wild: find every face, name it from a gallery, over photos, videos and cameras.

``detectors``: face detectors (Haar, dlib's CNN, a detector checkpoint) behind one interface;
``database``: the face database (:func:`open_gallery`): one gallery interface over the ``stores``
(SQLite, PostgreSQL, read-only ``.npz``) searched through a FAISS ``vector_index``, calibrated
by ``calibration``; ``gallery``: the ``.npz`` gallery of facetorch 0.1 (read-only);
``subjects``: which face of an enrolment photo is the person's; ``enrollment``: enrolling people
from folders, photos and cameras; ``probes``: identify / verify / open-set scoring of probe
images; ``pipeline``: the per-frame pipeline (detect, align, embed, match); ``runs``: that
pipeline over a source, writing ``recognitions.csv`` (``results``) and annotated pictures or
video; ``tracking``, ``tracked``, ``evidence``, ``quality``: face tracks over videos and cameras
(names from evidence over time); ``streams``: image folders, videos and cameras as sources, and atomic outputs;
``detect``: a single-face detector checkpoint over a source.

The names below are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FaceDetector": "detectors",
    "build_face_detector": "detectors",
    "FaceGallery": "database",
    "open_gallery": "database",
    "migrate_gallery": "database",
    "Gallery": "gallery",
    "GalleryError": "gallery",
    "UNKNOWN": "gallery",
    "enroll": "enrollment",
    "enroll_photos": "enrollment",
    "enroll_stream": "enrollment",
    "Face": "pipeline",
    "Recognizer": "pipeline",
    "build_matcher": "pipeline",
    "RecognitionRun": "runs",
    "recognize_source": "runs",
    "score_recognitions": "results",
    "FaceTracker": "tracking",
    "TrackOptions": "tracked",
    "TrackedStream": "tracked",
    "detect_source": "detect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"facetorch.recognition.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'facetorch.recognition' has no attribute {name!r}")
