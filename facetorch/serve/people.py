"""The people the service knows: the one module that opens the gallery.

:class:`People` speaks the face database's interface (``add``, ``remove``, ``people``, ``len``,
``identify``, ``calibrate_open_set``, ``close``) through :func:`~facetorch.recognition.database.open_gallery`:
an SQLite file or a PostgreSQL database that several workers (and machines, for PostgreSQL) share;
each call sees the people enrolled by the others (the database keeps a version counter), and each
enrolment is one transaction. A ``.npz`` gallery of facetorch 0.1 is served read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch.recognition.database import FaceGallery, open_gallery
from facetorch.recognition.enrollment import check_gallery_setup, gallery_for
from facetorch.recognition.gallery import UNKNOWN, GalleryError
from facetorch.serve.warnings_guard import recorded_warnings

__all__ = ["People", "recorded_detector"]


class People:
    """The enrolled people of one gallery, shared by the requests of one worker (thread-safe).

    Args:
        target: The gallery: ``X.db`` / ``sqlite:///X`` (created when missing), ``postgresql://...``, or a read-only ``.npz``.
        embedder: The model (its fingerprint must be the gallery's).
        detector: The detector's name (a gallery refuses faces of another detector).
        threshold: Cosine similarity to accept a match, instead of the gallery's open-set threshold.

    Raises:
        FileNotFoundError: the gallery's folder does not exist.
        GalleryError: not a gallery, another model or alignment made it, or a database that does not answer.
    """

    def __init__(self, target: str | Path, embedder: Any, detector: str, threshold: Optional[float] = None) -> None:
        self.target = str(target)
        local = "://" not in self.target or self.target.startswith("sqlite:///")
        folder = Path(self.target.removeprefix("sqlite:///")).parent
        if local and not folder.is_dir():
            raise FileNotFoundError(f"--gallery {self.target!r}: its folder does not exist; create it first")
        self.embedder = embedder
        self.detector = detector
        self.threshold_override = threshold
        self._lock = threading.Lock()
        self.read_only = self.target.endswith(".npz")
        self._gallery: FaceGallery = open_gallery(self.target) if self.read_only else gallery_for(embedder, self.target, detector)
        self.notes: list[str] = check_gallery_setup(self._gallery, embedder, detector, self.target)

    # -------------------------------------------------------------- what the service asks
    @property
    def people(self) -> list[str]:
        """Enrolled names, sorted."""
        with self._lock:
            return self._gallery.people

    def __len__(self) -> int:
        """Enrolled images (rows)."""
        with self._lock:
            return len(self._gallery)

    @property
    def threshold(self) -> Optional[float]:
        """The similarity that accepts a match: ``--threshold``, else the gallery's (None: none calibrated yet)."""
        if self.threshold_override is not None:
            return self.threshold_override
        with self._lock:
            value = self._gallery.default_threshold()  # the open-set threshold, else the model's pair threshold
        return float(value) if np.isfinite(value) else None

    def identify(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        """``(name, score)`` of each probe: the best-matching person and the cosine similarity, ``unknown`` below the threshold.

        An empty gallery answers ``unknown`` with score 0; a gallery without a threshold yet
        (fewer than 3 people, a model never validated) answers ``unknown`` with the best score.
        """
        threshold = self.threshold
        with self._lock:
            if len(self._gallery) == 0 or len(embeddings) == 0:
                return [(UNKNOWN, 0.0)] * len(embeddings)
            best = self._gallery.identify(embeddings, threshold=0.0)  # every probe's best match
        return [(name if threshold is not None and score >= threshold else UNKNOWN, float(score))
                for name, score in best]  # fmt: skip

    __call__ = identify  # the recognition pipeline's matcher

    def add(self, name: str, embeddings: np.ndarray, files: Sequence[str]) -> tuple[int, list[str]]:
        """Enrol ``embeddings`` of ``name`` in one transaction (files already enrolled, under any name, are skipped).

        Returns:
            How many rows were added, and notes for the user (e.g. no threshold yet with few people).
        """
        self._writable()
        with self._lock:
            added = self._gallery.add(name, embeddings, files)
            return added, _calibrate(self._gallery)

    def remove(self, name: str) -> int:
        """Forget every image of ``name``; returns how many rows were removed (0: not enrolled)."""
        self._writable()
        with self._lock:
            try:
                removed = self._gallery.remove(name)
            except KeyError:
                return 0
            _calibrate(self._gallery)
            return removed

    def _writable(self) -> None:
        if self.read_only:
            raise GalleryError(f"--gallery {self.target!r} is a .npz gallery of facetorch 0.1, read-only: migrate it "
                               "(gallery.py migrate --gallery OLD.npz --to people.db) to enrol or remove people")  # fmt: skip

    def close(self) -> None:
        """Release the database's connections (and keep its index)."""
        with self._lock:
            self._gallery.close()


def _calibrate(gallery: FaceGallery) -> list[str]:
    """Calibrate the open-set threshold again; its warnings (too few people, one person twice) become notes."""
    with recorded_warnings() as caught:
        gallery.calibrate_open_set()
    return [" ".join(str(w.message).split()) for w in caught]


def recorded_detector(target: str | Path) -> Optional[str]:
    """The detector an existing gallery's faces were found by (None: no gallery yet, or not recorded)."""
    target = str(target)
    if ("://" not in target or target.startswith("sqlite:///")) and not Path(target.removeprefix("sqlite:///")).is_file():
        return None
    try:
        with open_gallery(target) as gallery:
            return gallery.meta.detector
    except FileNotFoundError:
        return None
