"""The people the service knows: the one module that opens the gallery.

:class:`People` speaks the face database's interface (``add``, ``remove``, ``people``, ``len``,
``identify``, ``calibrate_open_set``, ``close``) and nothing else of the gallery. Today it stores
a :class:`~facetorch.recognition.gallery.Gallery` ``.npz`` file: every change is made under a lock
on the gallery's folder (so two workers never lose each other's enrolments), from the file as it
is on disk, and written atomically; a worker notices another's change by the file's stamp and
reads it again before matching. When the face database lands, ``_open`` / ``_write`` /
``_reload_if_changed`` become ``open_gallery`` and its own transactions, and nothing else changes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

from facetorch.recognition.enrollment import check_gallery_setup
from facetorch.recognition.gallery import UNKNOWN, Gallery
from facetorch.serve.warnings_guard import recorded_warnings

__all__ = ["People", "recorded_detector"]

T = TypeVar("T")


class People:
    """The enrolled people of one gallery, shared by the requests of one worker (thread-safe).

    Args:
        target: The gallery (a ``.npz`` path; created on the first enrolment when missing).
        embedder: The model (its fingerprint must be the gallery's).
        detector: The detector's name (a gallery refuses faces of another detector).
        threshold: Cosine similarity to accept a match, instead of the gallery's open-set threshold.

    Raises:
        FileNotFoundError: the gallery's folder does not exist.
        GalleryError: the file is not a gallery, or another model or alignment made it.
    """

    def __init__(self, target: str | Path, embedder: Any, detector: str, threshold: Optional[float] = None) -> None:
        self.path = Path(target)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"--gallery {str(self.path)!r}: its folder does not exist; create it first")
        self.embedder = embedder
        self.detector = detector
        self.threshold_override = threshold
        self._lock = threading.Lock()
        self._stamp: Optional[tuple[int, int]] = None
        self.notes: list[str] = []
        self._gallery = self._open()
        self.notes = check_gallery_setup(self._gallery, embedder, detector, self.path)

    # -------------------------------------------------------------- the store (swap for open_gallery)
    def _open(self) -> Gallery:
        if not self.path.exists():
            return Gallery.empty(self.embedder, self.detector)
        gallery = Gallery.load(self.path)
        gallery.check_model(self.embedder, self.path)  # also when another process replaced the file
        self._stamp = _stamp(self.path)
        return gallery

    def _reload_if_changed(self) -> None:
        """Read the file again when another worker (or ``gallery.py enroll``) changed it."""
        if self.path.exists() and _stamp(self.path) != self._stamp:
            with self._lock:
                if _stamp(self.path) != self._stamp:
                    self._gallery = self._open()

    def _change(self, edit: Callable[[Gallery], tuple[Gallery, T]]) -> T:
        """``edit`` the gallery as it is on disk, under a lock on its folder, and write what it returns atomically."""
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)  # other workers' changes wait; os.close releases it
            with self._lock:
                gallery = self._open()
                check_gallery_setup(gallery, self.embedder, self.detector, self.path, enrolling=True)
                gallery, result = edit(gallery)
                gallery.save(self.path)
                self._stamp = _stamp(self.path)
                self._gallery = gallery
        finally:
            os.close(folder)
        return result

    # -------------------------------------------------------------- what the service asks
    @property
    def people(self) -> list[str]:
        """Enrolled names, sorted."""
        self._reload_if_changed()
        return self._gallery.people

    def __len__(self) -> int:
        """Enrolled images (rows)."""
        return len(self._gallery)

    @property
    def threshold(self) -> Optional[float]:
        """The similarity that accepts a match: ``--threshold``, else the gallery's (None: none calibrated yet)."""
        if self.threshold_override is not None:
            return self.threshold_override
        value = self._gallery.default_threshold()  # the open-set threshold, else the model's pair threshold
        return float(value) if np.isfinite(value) else None

    def identify(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        """``(name, score)`` of each probe: the best-matching person and the cosine similarity, ``unknown`` below the threshold.

        An empty gallery answers ``unknown`` with score 0; a gallery without a threshold yet
        (fewer than 3 people, a model never validated) answers ``unknown`` with the best score.
        """
        self._reload_if_changed()
        gallery, threshold = self._gallery, self.threshold
        if len(gallery) == 0 or len(embeddings) == 0:
            return [(UNKNOWN, 0.0)] * len(embeddings)
        best = gallery.identify(embeddings, threshold=-1.0)  # every probe's best match: cosine is never below -1
        return [(name if threshold is not None and score >= threshold else UNKNOWN, float(score))
                for name, score in best]  # fmt: skip

    __call__ = identify  # the recognition pipeline's matcher

    def add(self, name: str, embeddings: np.ndarray, files: Sequence[str]) -> tuple[int, list[str]]:
        """Enrol ``embeddings`` of ``name`` (files already enrolled, under any name, are skipped).

        Returns:
            How many rows were added, and notes for the user (e.g. no threshold yet with few people).
        """

        def edit(gallery: Gallery) -> tuple[Gallery, tuple[int, list[str]]]:
            added = gallery.add(name, embeddings, files)
            return gallery, (added, _calibrate(gallery))

        return self._change(edit)

    def remove(self, name: str) -> int:
        """Forget every image of ``name``; returns how many rows were removed (0: not enrolled)."""

        def edit(gallery: Gallery) -> tuple[Gallery, int]:
            keep = np.array([n != name for n in gallery.meta.names], dtype=bool)
            if keep.all():
                return gallery, 0
            meta = replace(gallery.meta, names=[n for n, k in zip(gallery.meta.names, keep) if k],
                           files=[f for f, k in zip(gallery.meta.files, keep) if k])  # fmt: skip
            smaller = Gallery(gallery.embeddings[keep], meta)
            _calibrate(smaller)
            return smaller, int((~keep).sum())

        return self._change(edit)

    def close(self) -> None:
        """Nothing to release for a file; the face database closes its connections here."""


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size


def _calibrate(gallery: Gallery) -> list[str]:
    """Calibrate the open-set threshold again; its warnings (too few people, one person twice) become notes."""
    with recorded_warnings() as caught:
        gallery.calibrate_open_set()
    return [" ".join(str(w.message).split()) for w in caught]


def recorded_detector(target: str | Path) -> Optional[str]:
    """The detector an existing gallery's faces were found by (None: no gallery yet, or not recorded)."""
    path = Path(target)
    return Gallery.load(path).meta.detector if path.is_file() else None
