"""A gallery of enrolled faces: enrolled embeddings, identified or ``unknown``, and the ``.npz`` file that holds them.

The gallery file is a NumPy ``.npz`` written without pickle (arrays and one JSON string), so
loading it never runs code: ``embeddings`` (N, D) float32, one row per enrolled image, and
``meta``, the JSON of :class:`GalleryMeta` (names and files per row, the model fingerprint, the
thresholds, and how the faces were found and aligned). A gallery belongs to the model that
embedded it: loading it with another checkpoint is refused, since embeddings of two models are
not comparable; so is enrolling faces found by another detector, or aligned another way, into it.

Two thresholds: the checkpoint's pair threshold (calibrated on validation pairs: is this pair
the same person?) decides ``verify``. Identification compares a face with *every* enrolled
person and keeps the best match, so a stranger's best score is the maximum of many and passes a
pair threshold far more often. ``identify`` therefore uses an open-set threshold that the
gallery calibrates on its own people at each enrolment: each enrolled person in turn plays a
stranger against the others, and the threshold lets through at most ``open_set_fpir`` of them.
"""

from __future__ import annotations

import dataclasses
import io as bytes_io
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from facetorch import evaluation, io

if TYPE_CHECKING:  # the model is needed only to make an empty gallery: reading one stays free of torch
    from facetorch.inference.embedder import FaceEmbedder

__all__ = ["UNKNOWN", "Gallery", "GalleryError", "GalleryMeta", "file_key"]

GALLERY_FORMAT = 2
READABLE_FORMATS = (2,)  # format 1 (facetorch 0.1.0 before the detector was recorded) is no longer read
UNKNOWN = "unknown"
SAME_IMAGE = 0.9999  # a cosine similarity this close to 1 between two names: the same image (or person) twice


class GalleryError(ValueError):
    """A gallery file that cannot be used: malformed, or made by another model."""


# ----------------------------------------------------------------------------------------------
# The gallery
# ----------------------------------------------------------------------------------------------


@dataclass
class GalleryMeta:
    """What a gallery file stores beside its embeddings."""

    model_fingerprint: str
    threshold: float
    names: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    open_set_fpir: float = 0.05
    open_set_threshold: float = float("nan")
    format: int = GALLERY_FORMAT
    # What made the embeddings (format 2 on; None: not recorded by a format-1 file).
    model: str = ""  # ckpt:<path> or config:<path>, which recognise can load again
    detector: Optional[str] = None  # how faces were found: haar, dlib_cnn, ckpt:<fingerprint>, whole (crops), haar_largest
    alignment: Optional[str] = None  # five_point or none


class Gallery:
    """Enrolled embeddings, one row per image, each with the person's name."""

    def __init__(self, embeddings: np.ndarray, meta: GalleryMeta) -> None:
        if embeddings.ndim != 2 or len(embeddings) != len(meta.names) or len(meta.names) != len(meta.files):
            raise GalleryError(
                f"Expected one name and one file per embedding row, got {embeddings.shape} embeddings, "
                f"{len(meta.names)} names and {len(meta.files)} files"
            )
        self.embeddings = embeddings.astype(np.float32)
        self.meta = meta

    @classmethod
    def empty(cls, embedder: FaceEmbedder, detector: Optional[str] = None) -> Gallery:
        """A gallery for ``embedder``'s faces, found by ``detector`` (default: how ``embedder.faces`` finds them)."""
        from facetorch.inference.embedder import alignment_of

        dim = embedder.embedding_dim
        detector = detector or ("haar_largest" if getattr(embedder, "faces", "whole") == "haar" else "whole")
        meta = GalleryMeta(embedder.fingerprint, embedder.threshold, model=getattr(embedder, "source", ""),
                           detector=detector, alignment=alignment_of(getattr(embedder, "input", None)))  # fmt: skip
        return cls(np.empty((0, dim), np.float32), meta)

    @property
    def people(self) -> list[str]:
        """Enrolled names, sorted."""
        return sorted(set(self.meta.names))

    def __len__(self) -> int:
        return len(self.meta.names)

    def rows(self) -> tuple[list[str], np.ndarray]:
        """The names (one per row) and the embeddings, as :meth:`FaceGallery.rows` gives them."""
        return list(self.meta.names), self.embeddings

    def add(self, name: str, embeddings: np.ndarray, files: Sequence[Path | str]) -> int:
        """Enrol images of ``name`` (files already enrolled are skipped); returns how many were added.

        A file is a path, or any unique label (a camera frame's); paths are stored resolved.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1)) if embeddings.size else np.array([], int)
        if len(bad):
            named = ", ".join(str(files[i]) for i in bad[:3])
            raise GalleryError(
                f"{len(bad)} embedding(s) of {name!r} are not finite (NaN or inf): {named}; the model gave no usable "
                "embedding for these images (a broken checkpoint, or images it cannot take): leave them out"
            )
        self._check_dim(embeddings, f"the embeddings of {name!r}")
        known = set(self.meta.files)
        keys = [_file_key(path) for path in files]
        keep = [i for i, key in enumerate(keys) if key not in known]
        if keep:
            self.embeddings = np.concatenate([self.embeddings, embeddings[keep]])
            self.meta.names += [name] * len(keep)
            self.meta.files += [keys[i] for i in keep]
        return len(keep)

    def check_setup(self, detector: Optional[str], alignment: str, source: str | Path, enrolling: bool) -> list[str]:
        """Refuse faces aligned another way, and (when ``enrolling``) found by another detector.

        Returns notes for the user: recognising with another detector than enrolment used is
        allowed (the embeddings stay comparable), but said.

        Raises:
            GalleryError: the alignment differs, or faces of another detector would be mixed into it.
        """
        name = str(source)
        if self.meta.alignment is not None and self.meta.alignment != alignment:
            raise GalleryError(f"Gallery {name!r} holds faces aligned with {self.meta.alignment!r}, this model aligns with "
                               f"{alignment!r}; enrol the people again into a new gallery")  # fmt: skip
        if detector is None or self.meta.detector == detector:
            return []
        if enrolling and len(self):
            if self.meta.detector is None:
                raise GalleryError(f"Gallery {name!r} was written by an older facetorch (format 1) that did not record how "
                                   "its faces were found; enrol the people again into a new gallery")  # fmt: skip
            raise GalleryError(f"Gallery {name!r} holds faces found by {self.meta.detector!r}; enrolling faces found by "
                               f"{detector!r} would mix two detectors: pass --detector {self.meta.detector} (or --faces), "
                               "or enrol into a new gallery")  # fmt: skip
        if enrolling:
            self.meta.detector = detector
            return []
        found_by = self.meta.detector or "an unrecorded detector"
        return [f"the gallery's faces were found by {found_by}; recognising with {detector}"]

    def check_model(self, embedder: FaceEmbedder, source: str | Path) -> None:
        """Refuse a gallery that another model embedded (a checkpoint and its export are the same model)."""
        dim = int(getattr(embedder, "embedding_dim", self.embeddings.shape[1]))
        if len(self) and dim != self.embeddings.shape[1]:
            raise GalleryError(
                f"Gallery {str(source)!r} holds {self.embeddings.shape[1]}-d embeddings, this model's are {dim}-d: "
                "it was made by another model; enrol the people again into a new gallery with this model"
            )
        if self.meta.model_fingerprint != embedder.fingerprint:
            raise GalleryError(
                f"Gallery {str(source)!r} was made by another model (fingerprint {self.meta.model_fingerprint}); "
                f"this model's is {embedder.fingerprint}. Embeddings of different models cannot be "
                "compared: enrol the people again into a new gallery with this model."
            )

    def best_matches(self, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
        """For each probe (N, D), the most similar enrolled person and that cosine similarity.

        A person's similarity is that of the best of their images.
        """
        if len(self) == 0:
            raise GalleryError("The gallery is empty: enrol people first")
        embeddings = np.asarray(embeddings)
        self._check_dim(embeddings, "the probes")
        if embeddings.size and not np.isfinite(embeddings).all():
            raise GalleryError("A probe's embedding is not finite (NaN or inf): the model gave no usable embedding for it")
        people = self.people
        # float64 throughout: thresholds are float64 and sit one ulp above a calibration score.
        similarity = embeddings.astype(np.float64) @ self.embeddings.T.astype(np.float64)  # (N, rows): cosine
        per_person = np.full((len(embeddings), len(people)), -np.inf)
        names = np.array(self.meta.names)
        for k, person in enumerate(people):
            per_person[:, k] = similarity[:, names == person].max(axis=1)
        best = per_person.argmax(axis=1)
        return [people[k] for k in best], per_person[np.arange(len(embeddings)), best]

    def calibrate_open_set(self) -> float:
        """Set ``meta.open_set_threshold`` from the enrolled people alone.

        Each person's images are matched against everyone else's, as a stranger's would be, and
        the threshold accepts at most ``meta.open_set_fpir`` of these best matches. With fewer than
        3 people there is nothing to calibrate on: NaN (stored as ``null``), with a warning, and
        :meth:`default_threshold` falls back to the model's pair threshold.

        Two names whose images match each other as closely as the same image (the same person
        enrolled twice) would push the threshold to 1 and reject everyone: they are named in a
        warning and left out of each other's stranger scores.
        """
        people, names = self.people, np.array(self.meta.names)
        if len(people) < 3:
            self.meta.open_set_threshold = float("nan")
            warnings.warn(
                f"The gallery holds {len(people)} person{'' if len(people) == 1 else 's'}: no open-set threshold can "
                f"be calibrated (it needs 3 people or more); identify uses the model's pair threshold "
                f"{self.meta.threshold:.4g} unless --threshold is given",
                stacklevel=2,
            )
            return self.meta.open_set_threshold
        rows = self.embeddings.astype(np.float64)
        similarity = rows @ rows.T  # (rows, rows): cosine
        twins: dict[tuple[str, str], float] = {}
        stranger_scores = []
        for person in people:
            own = names == person
            others = similarity[own][:, ~own]  # (own images, other rows)
            other_names = names[~own]
            for twin in sorted(set(other_names[(others >= SAME_IMAGE).any(axis=0)])):
                pair = (min(person, twin), max(person, twin))
                twins[pair] = max(twins.get(pair, 0.0), float(others[:, other_names == twin].max()))
            keep = ~np.isin(other_names, [b if a == person else a for a, b in twins if person in (a, b)])
            if keep.any():
                stranger_scores.extend(others[:, keep].max(axis=1).tolist())
        for (first, second), score in twins.items():
            warnings.warn(
                f"{first} and {second} match each other at {score:.4f}, as the same image would: the same person "
                "under two names? They are left out of each other's calibration; enrol them under one name",
                stacklevel=2,
            )
        if not stranger_scores:
            self.meta.open_set_threshold = float("nan")
            return self.meta.open_set_threshold
        self.meta.open_set_threshold = min(1.0, evaluation.fpir_threshold(stranger_scores, self.meta.open_set_fpir))
        return self.meta.open_set_threshold

    def _check_dim(self, embeddings: np.ndarray, what: str) -> None:
        if embeddings.ndim != 2 or (len(embeddings) and embeddings.shape[1] != self.embeddings.shape[1]):
            raise GalleryError(
                f"{what} have shape {tuple(embeddings.shape)}, but the gallery holds {self.embeddings.shape[1]}-d "
                f"embeddings: were they made by another model? Use the model the gallery was enrolled with"
            )

    def default_threshold(self) -> float:
        """The open-set threshold when calibrated, else the checkpoint's pair threshold."""
        if np.isfinite(self.meta.open_set_threshold):
            return self.meta.open_set_threshold
        return self.meta.threshold

    def identify(self, embeddings: np.ndarray, threshold: Optional[float] = None) -> list[tuple[str, float]]:
        """The (name, similarity) of each probe; the name is ``"unknown"`` below the threshold.

        The threshold is :meth:`default_threshold` unless one is given.
        """
        threshold = self.default_threshold() if threshold is None else threshold
        if not np.isfinite(threshold):
            raise GalleryError("The gallery has no calibrated threshold (the checkpoint never validated); pass --threshold")
        names, scores = self.best_matches(embeddings)
        return [(name if score >= threshold else UNKNOWN, float(score)) for name, score in zip(names, scores)]

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """Write atomically as ``.npz`` (no pickle)."""
        buffer = bytes_io.BytesIO()
        meta = np.frombuffer(io.json_line(asdict(self.meta)).encode("utf-8"), dtype=np.uint8)  # NaN as null
        np.savez(buffer, embeddings=self.embeddings, meta=meta)
        with io.atomic_open(Path(path), "wb") as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, flag: str = "--gallery") -> Gallery:
        """Read a gallery written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file. IsADirectoryError: ``path`` is a folder.
            GalleryError: not a facetorch gallery (not a zip, a key missing, meta that is not JSON or
                has fields of the wrong kind), another format, or rows that are not finite.
        """
        path = Path(path)
        name = f"{flag} {str(path)!r}"
        if path.is_dir():
            raise IsADirectoryError(f"{name} is a folder; expected a gallery .npz file (written by gallery.py enroll)")
        if not path.is_file():
            raise FileNotFoundError(f"{name} does not exist; create it with gallery.py enroll")
        try:
            # our own handle, closed even when numpy's zip reader fails half way (a truncated file)
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
                embeddings = np.asarray(archive["embeddings"])
                meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise GalleryError(f"{name} is not a facetorch gallery (.npz with embeddings and meta): {reason}") from error
        if not isinstance(meta, dict):
            raise GalleryError(f"{name}: its meta is a JSON {type(meta).__name__}, not an object; is it a facetorch gallery?")
        if meta.get("format") not in READABLE_FORMATS:
            readable = ", ".join(map(str, READABLE_FORMATS))
            raise GalleryError(f"{name}: gallery format {meta.get('format')!r}; this facetorch reads formats {readable} "
                               "(written by another version? enrol the people again)")  # fmt: skip
        known = {f.name for f in dataclasses.fields(GalleryMeta)}
        unexpected = sorted(set(meta) - known)
        if unexpected:
            raise GalleryError(f"{name}: unexpected gallery fields {unexpected}; is it a facetorch gallery of another version?")
        for key in ("names", "files"):
            value = meta.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise GalleryError(f"{name}: meta {key!r} must be a list of strings, got {type(value).__name__}")
        for key in ("threshold", "open_set_threshold", "open_set_fpir"):
            if meta.get(key) is None:
                meta[key] = float("nan")  # stored as null: not calibrated
            elif not isinstance(meta[key], (int, float)) or isinstance(meta[key], bool):
                raise GalleryError(f"{name}: meta {key!r} must be a number, got {meta[key]!r}")
        if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
            raise GalleryError(f"{name}: embeddings must be a 2-d array of numbers (rows x dim), got shape "
                               f"{tuple(embeddings.shape)} of {embeddings.dtype}")  # fmt: skip
        bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
        if len(bad):
            raise GalleryError(f"{name}: row {int(bad[0])} of its embeddings is not finite (NaN or inf; {len(bad)} rows in "
                               "all): the file is damaged; enrol the people again")  # fmt: skip
        try:
            return cls(embeddings, GalleryMeta(**meta))
        except GalleryError as error:
            raise GalleryError(f"{name}: {error}") from error


def file_key(path: Path | str) -> str:
    """How a gallery stores an enrolled file: an existing path resolved, any other label as it is."""
    return str(Path(path).resolve()) if os.path.exists(path) else str(path)


_file_key = file_key
