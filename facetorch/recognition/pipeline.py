"""The per-frame recognition pipeline: every face found, aligned, embedded, named or ``unknown``.

For each frame: a face detector (:mod:`facetorch.recognition.detectors`) finds every face; each face is
aligned from its box (5 points, for models trained aligned) and all faces of the frame are
embedded in one batch; each embedding is matched against the gallery, by its open-set threshold
(:class:`OpenSetMatcher`) or by the original project's linear SVM and its probability
(:class:`SvmMatcher`); below the threshold a face is ``unknown``.

Running it over photos, videos and cameras is :mod:`facetorch.recognition.runs`; enrolment is
:mod:`facetorch.recognition.enrollment`.

The embedder is duck-typed: anything with ``embed(images)``, ``fingerprint``, ``threshold`` and
``channels`` works (an :class:`~facetorch.inference.embedder.Embedder` from a checkpoint or a
config, or another backend); ``embed_faces(image, boxes)`` is used where it exists, else each
face is cut out of the photo so that the embedder's own preparation finds it where it expects it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import cv2
import numpy as np

from facetorch.boxes import crop_box, expand_box
from facetorch.recognition.database import FaceGallery
from facetorch.recognition.detectors import FaceDetector
from facetorch.recognition.gallery import UNKNOWN, GalleryError
from facetorch.recognition.streams import draw_label

__all__ = ["Face", "OpenSetMatcher", "Recognizer", "SvmMatcher", "build_matcher", "draw_faces", "embed_faces", "embed_faces_of"]

KNOWN_COLOUR = (0, 170, 0)  # BGR
UNKNOWN_COLOUR = (0, 0, 220)


class Embedding(Protocol):
    """What recognition needs of an embedder (a checkpoint's, a config's, or another backend's)."""

    fingerprint: str
    threshold: float
    channels: int

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D) of decoded uint8 images."""
        ...


@dataclass(frozen=True)
class Face:
    """One face of a frame: its box in the frame's pixels, the detector's score, the name and its score."""

    box: tuple[float, float, float, float]
    detection_score: float
    name: str
    score: float

    @property
    def known(self) -> bool:
        """Named (not ``unknown``)."""
        return self.name != UNKNOWN


# --------------------------------------------------------------------------------------------
# Matching embeddings to the gallery
# --------------------------------------------------------------------------------------------


class OpenSetMatcher:
    """The best-matching enrolled person, or ``unknown`` below the gallery's open-set threshold (or ``threshold``).

    The score is the cosine similarity to that person's closest enrolled image.
    """

    kind = "open_set"

    def __init__(self, gallery: FaceGallery, threshold: Optional[float] = None) -> None:
        if len(gallery) == 0:
            raise GalleryError("The gallery is empty: enrol people first (gallery.py enroll)")
        self.gallery = gallery
        self.given = threshold is not None  # chosen by the user for single faces (a track's rule keeps its scale)
        self.threshold = gallery.default_threshold() if threshold is None else float(threshold)
        if not np.isfinite(self.threshold):
            raise GalleryError(f"The gallery has no calibrated threshold ({len(gallery.people)} people enrolled; calibration "
                               "needs 3 or more, and the model was never validated): pass --threshold")  # fmt: skip

    def __call__(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        return self.gallery.identify(embeddings, self.threshold)


class SvmMatcher:
    """The original project's classifier: a linear SVM on the enrolled embeddings, with Platt-scaled probabilities.

    Closed set by default, as the original: every face gets its most likely person, scored by that
    probability. A face whose most likely person has a probability below ``threshold`` is
    ``unknown``; the probabilities are shared among all enrolled people, so with many people and
    few photos each they are small, and the open-set matcher is the one that rejects strangers.
    """

    kind = "svm"

    def __init__(self, gallery: FaceGallery, threshold: Optional[float] = None) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        if len(gallery) == 0:
            raise GalleryError("The gallery is empty: enrol people first (gallery.py enroll)")
        rows, embeddings = gallery.rows()
        names = np.asarray(rows)
        people, counts = np.unique(names, return_counts=True)
        if len(people) < 2 or counts.min() < 2:
            raise GalleryError(f"--matcher svm needs 2 or more people with 2 or more images each; the gallery has {len(people)} "
                               f"people, the fewest images {int(counts.min())}")  # fmt: skip
        self.threshold = 0.0 if threshold is None else float(threshold)
        # Platt scaling on cross-validated decision values, then one SVM on everything: what SVC(probability=True)
        # did, in the form scikit-learn keeps (that flag is deprecated since 1.9).
        # Standardised first: unit-length face embeddings sit close together (cosine 0.9 between strangers for dlib's),
        # and a linear SVM at C=1 on them as they are barely separates anyone (12% cross-validated on 25 people).
        folds = int(min(5, counts.min()))
        svm = make_pipeline(StandardScaler(), SVC(kernel="linear"))
        self.model = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
        with warnings.catch_warnings():  # a gallery has few photos per person: more people than half the rows is normal
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
            self.model.fit(embeddings, names)

    def __call__(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        probabilities = self.model.predict_proba(embeddings)
        best = probabilities.argmax(axis=1)
        scores = probabilities[np.arange(len(best)), best]
        return [(str(self.model.classes_[k]) if p >= self.threshold else UNKNOWN, float(p)) for k, p in zip(best, scores)]


def build_matcher(kind: str, gallery: FaceGallery, threshold: Optional[float] = None) -> OpenSetMatcher | SvmMatcher:
    """``open_set`` (the gallery's threshold) or ``svm`` (a linear SVM's probability)."""
    if kind == "open_set":
        return OpenSetMatcher(gallery, threshold)
    if kind == "svm":
        return SvmMatcher(gallery, threshold)
    raise ValueError(f"--matcher must be 'open_set' or 'svm', got {kind!r}")


# --------------------------------------------------------------------------------------------
# Faces -> embeddings
# --------------------------------------------------------------------------------------------


def _crop_for(embedder: Any, image: np.ndarray, box: np.ndarray, margin: float = 0.2) -> np.ndarray:
    """The part of a photo to give an embedder without ``embed_faces``, so its own preparation finds the face.

    A model aligned in a face box given as fractions of its input (``align_box``) gets a crop in
    which the detector's box lands on those fractions (black beyond the photo); any other model
    gets the box grown by ``margin``.
    """
    spec = getattr(embedder, "input", None)
    fractions = getattr(spec, "align_box", None) if getattr(spec, "align", None) else None
    height, width = image.shape[:2]
    if fractions is None:
        return crop_box(image, expand_box(tuple(box), margin, width, height))
    fx1, fy1, fx2, fy2 = fractions
    x1, y1, x2, y2 = (float(v) for v in box)
    crop_w, crop_h = (x2 - x1) / (fx2 - fx1), (y2 - y1) / (fy2 - fy1)
    left, top = int(round(x1 - fx1 * crop_w)), int(round(y1 - fy1 * crop_h))
    crop_w, crop_h = max(1, int(round(crop_w))), max(1, int(round(crop_h)))
    canvas = np.zeros((crop_h, crop_w, *image.shape[2:]), dtype=image.dtype)
    sx, sy = max(left, 0), max(top, 0)
    ex, ey = min(left + crop_w, width), min(top + crop_h, height)
    if ex > sx and ey > sy:
        canvas[sy - top : ey - top, sx - left : ex - left] = image[sy:ey, sx:ex]
    return canvas


def embed_faces(embedder: Any, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Embeddings (N, D) of the faces in ``boxes`` of one RGB photo, in one batch."""
    if hasattr(embedder, "embed_faces"):
        return embedder.embed_faces(image, boxes)
    picture = image if embedder.channels == 3 or image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return embedder.embed([_crop_for(embedder, picture, box) for box in np.asarray(boxes).reshape(-1, 4)])


def embed_faces_of(embedder: Any, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Embeddings of the faces in ``boxes[i]`` of each photo ``images[i]``: the faces of all photos in one batch.

    An embedder that prepares faces apart from running its network (``face_tensors`` and
    ``embed_tensors``, as :class:`~facetorch.inference.embedder.Embedder`) runs the network once
    for every face of every photo; any other embeds photo by photo (:func:`embed_faces`).
    """
    counts = [len(np.asarray(b).reshape(-1, 4)) for b in boxes]
    if not (hasattr(embedder, "face_tensors") and hasattr(embedder, "embed_tensors")):
        return [embed_faces(embedder, image, b) for image, b in zip(images, boxes)]
    tensors = [t for image, b, n in zip(images, boxes, counts) if n for t in embedder.face_tensors(image, b)]
    rows = embedder.embed_tensors(tensors)
    return list(np.split(rows, np.cumsum(counts)[:-1])) if counts else []


class Recognizer:
    """Detect, align, embed and match every face of a frame.

    Args:
        embedder: The embedding model (see :class:`Embedding`).
        detector: The face detector.
        matcher: :class:`OpenSetMatcher` or :class:`SvmMatcher`.
    """

    def __init__(self, embedder: Embedding, detector: FaceDetector, matcher: OpenSetMatcher | SvmMatcher) -> None:
        self.embedder = embedder
        self.detector = detector
        self.matcher = matcher
        self.seconds = {"detect": 0.0, "embed": 0.0, "match": 0.0}

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The faces of each uint8 RGB image (one detector batch, then every face of every image in one embedding batch)."""
        start = time.perf_counter()
        found = self.detector.detect_batch(images)
        detected = time.perf_counter()
        embeddings = [rows for rows in embed_faces_of(self.embedder, images, [boxes for boxes, _ in found]) if len(rows)]
        embedded = time.perf_counter()
        matches = self.matcher(np.concatenate(embeddings)) if embeddings else []
        self.seconds["detect"] += detected - start
        self.seconds["embed"] += embedded - detected
        self.seconds["match"] += time.perf_counter() - embedded
        faces: list[list[Face]] = []
        position = 0
        for boxes, scores in found:
            faces.append([Face(tuple(float(v) for v in box), float(score), *matches[position + i])  # type: ignore[arg-type]
                          for i, (box, score) in enumerate(zip(boxes, scores))])  # fmt: skip
            position += len(boxes)
        return faces


def draw_faces(frame_bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of the frame with each face's box, name and score ("unknown" in red, names in green)."""
    out = frame_bgr.copy() if frame_bgr.ndim == 3 else cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    for face in faces:
        draw_label(out, face.box, f"{face.name} {face.score:.2f}", KNOWN_COLOUR if face.known else UNKNOWN_COLOUR)
    return out
