"""Recognise people in photos, folders, videos and a camera: every face found, aligned, named or ``unknown``.

The library side of ``tools/gallery.py recognize`` and ``enroll`` from photos or a camera. For each
frame: a face detector (:mod:`facetorch.inference.face_detectors`) finds every face; each face is
aligned from its box (5 points, for models trained aligned) and all faces of the frame are
embedded in one batch; each embedding is matched against the gallery, by its open-set threshold
(:class:`OpenSetMatcher`) or by the original project's linear SVM and its probability
(:class:`SvmMatcher`); below the threshold a face is ``unknown``.

:func:`recognize_source` writes annotated PNGs (images) or an annotated video (video, camera) and
``recognitions.csv`` with one row per face, ``source, frame, x1, y1, x2, y2, name, score``
(pixels of the source), and stops cleanly on Ctrl-C / SIGTERM (the frame in progress is
finished; the video and the CSV are closed and renamed into place).

The embedder is duck-typed: anything with ``embed(images)``, ``fingerprint``, ``threshold`` and
``channels`` works (an :class:`~facetorch.inference.gallery.Embedder` from a checkpoint or a
config, or another backend); ``embed_faces(image, boxes)`` is used where it exists, else each
face is cut out of the photo so that the embedder's own preparation finds it where it expects it.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Protocol

import cv2
import numpy as np

from facetorch import io
from facetorch.data.crops import crop_box, expand_box
from facetorch.data.images import ImageReadError, read_image
from facetorch.inference.face_detectors import FaceDetector
from facetorch.inference.gallery import UNKNOWN, Gallery, GalleryError, alignment_of, open_gallery, person_folders
from facetorch.inference.streams import (
    FOURCC_SUFFIX,
    Source,
    VideoSink,
    atomic_csv,
    draw_label,
    frame_path,
    open_source,
    read_frames,
    stop_on_signals,
    write_png_bgr,
)

__all__ = [
    "CSV_FIELDS",
    "CSV_NAME",
    "Face",
    "OpenSetMatcher",
    "RecognitionRun",
    "Recognizer",
    "SvmMatcher",
    "build_matcher",
    "draw_faces",
    "enroll_photos",
    "enroll_stream",
    "recognize_source",
    "subject_face",
]

CSV_NAME = "recognitions.csv"
CSV_FIELDS = ["source", "frame", "x1", "y1", "x2", "y2", "name", "score"]
KNOWN_COLOUR = (0, 170, 0)  # BGR
UNKNOWN_COLOUR = (0, 0, 220)
WINDOW = "facetorch recognize"
DOMINANCE = 2.0  # a photo's subject is a face at least this many times larger than every other face in it


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

    def __init__(self, gallery: Gallery, threshold: Optional[float] = None) -> None:
        if len(gallery) == 0:
            raise GalleryError("The gallery is empty: enrol people first (gallery.py enroll)")
        self.gallery = gallery
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

    def __init__(self, gallery: Gallery, threshold: Optional[float] = None) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        if len(gallery) == 0:
            raise GalleryError("The gallery is empty: enrol people first (gallery.py enroll)")
        names = np.asarray(gallery.meta.names)
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
            self.model.fit(gallery.embeddings, names)

    def __call__(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        probabilities = self.model.predict_proba(embeddings)
        best = probabilities.argmax(axis=1)
        scores = probabilities[np.arange(len(best)), best]
        return [(str(self.model.classes_[k]) if p >= self.threshold else UNKNOWN, float(p)) for k, p in zip(best, scores)]


def build_matcher(kind: str, gallery: Gallery, threshold: Optional[float] = None) -> OpenSetMatcher | SvmMatcher:
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
        """The faces of each uint8 RGB image (one detector batch; the faces of each image in one embedding batch)."""
        start = time.perf_counter()
        found = self.detector.detect_batch(images)
        detected = time.perf_counter()
        embeddings = [embed_faces(self.embedder, image, boxes) for image, (boxes, _) in zip(images, found) if len(boxes)]
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


def _rows(source: str, frame: int, faces: Sequence[Face]) -> Iterator[dict[str, Any]]:
    for face in faces:
        x1, y1, x2, y2 = (f"{v:.1f}" for v in face.box)
        yield {"source": source, "frame": frame, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "name": face.name,
               "score": f"{face.score:.4f}"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Recognising a source
# --------------------------------------------------------------------------------------------


@dataclass
class RecognitionRun:
    """What a run wrote and how fast it went (frames and faces per second of the whole loop)."""

    frames: int
    frames_read: int
    faces: int
    known: int
    unknown: int
    seconds: float
    frames_s: float
    faces_s: float
    detect_s: float
    embed_s: float
    match_s: float
    output: str
    csv: str
    stopped_early: bool
    detector: str
    matcher: str
    threshold: float
    unreadable: list[str] = field(default_factory=list)


def check_show() -> None:
    """Refuse ``--show`` where OpenCV has no GUI (``opencv-python-headless``), before any work.

    Raises:
        ValueError: no window can be opened.
    """
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as error:
        reason = " ".join(str(error).split())[-160:]
        raise ValueError(f"--show needs an OpenCV built with a GUI; this one ({cv2.__version__}) cannot open a window "
                         f"({reason}); run without --show (the annotated output is written either way)") from error  # fmt: skip


class _Window:
    """The ``--show`` window: shows a frame; ``q`` or Esc asks to stop."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.closed = False

    def show(self, frame_bgr: np.ndarray) -> bool:
        """Show the frame; ``True`` when the user asked to stop."""
        if not self.enabled:
            return False
        cv2.imshow(WINDOW, frame_bgr)
        return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled and not self.closed:
            cv2.destroyWindow(WINDOW)
            self.closed = True


def recognize_source(
    recognizer: Recognizer,
    source: str | Source,
    output: str | Path,
    *,
    overwrite: bool = False,
    every: int = 1,
    max_frames: Optional[int] = None,
    batch_size: int = 1,
    show: bool = False,
    fourcc: str = "mp4v",
    progress: bool = True,
) -> RecognitionRun:
    """Recognise every face in ``source``; write annotated outputs and ``recognitions.csv`` to ``output``.

    Args:
        recognizer: Detector, embedder and matcher.
        source: An image, a folder of images (searched recursively), a video file, a camera index,
            or a :class:`~facetorch.inference.streams.Source` opened already.
        output: Output folder (new or empty unless ``overwrite``).
        overwrite: Write into a non-empty folder.
        every: Recognise every N-th frame of a stream; the frames between are written with the
            last faces drawn (and have no CSV rows).
        max_frames: Stop a stream after reading this many frames.
        batch_size: Frames of a stream given to the detector at once (for a GPU).
        show: Show the annotated frames in a window (``q`` stops).
        fourcc: Codec of the annotated video: ``mp4v`` (``.mp4``) or ``MJPG`` (``.avi``).
        progress: Show a progress bar (on a terminal).

    Raises:
        FileNotFoundError: ``source`` does not exist (and is not a camera index).
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: no image in a folder, a video / camera that cannot be opened, bad ``every``.
    """
    for flag, value in (("--every", every), ("--batch_size", batch_size), ("--max_frames", max_frames)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be 1 or more, got {value}")
    output = io.check_output_folder(output, overwrite)
    opened = open_source(source) if isinstance(source, str) else source
    window = _Window(show)
    try:
        output.mkdir(parents=True, exist_ok=True)
        if opened.kind == "images":
            return _recognize_images(recognizer, opened, output, window, progress)
        return _recognize_stream(recognizer, opened, output, every, max_frames, batch_size, window, fourcc, progress)
    finally:
        opened.release()
        window.close()


class _Counts:
    def __init__(self) -> None:
        self.frames = self.read = self.faces = self.known = 0
        self.start = time.perf_counter()

    def add(self, faces: Sequence[Face]) -> None:
        self.frames += 1
        self.faces += len(faces)
        self.known += sum(face.known for face in faces)


def _recognize_images(recognizer: Recognizer, source: Source, output: Path, window: _Window, progress: bool) -> RecognitionRun:
    counts, unreadable, stopped = _Counts(), [], False
    csv_path = output / CSV_NAME
    with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as rows:
        for index, file in enumerate(io.progress(source.files, "recognize", enabled=progress)):
            if stop_asked():
                stopped = True
                break
            counts.read += 1
            try:
                image = read_image(file, 3)
            except ImageReadError as error:
                print(f"gallery.py: skipped {file}: {error}", file=sys.stderr)
                unreadable.append(str(file))
                continue
            (faces,) = recognizer([image])
            annotated = draw_faces(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), faces)
            write_png_bgr(frame_path(output, source.root, file), annotated)  # type: ignore[arg-type]
            rows.writerows(_rows(str(file), index, faces))
            counts.add(faces)
            if window.show(annotated):
                stopped = True
                break
    return _summary(recognizer, counts, output, csv_path, stopped, unreadable)


def _recognize_stream(
    recognizer: Recognizer, source: Source, output: Path, every: int, max_frames: Optional[int], batch_size: int,
    window: _Window, fourcc: str, progress: bool,
) -> RecognitionRun:  # fmt: skip
    counts, stopped = _Counts(), False
    csv_path = output / CSV_NAME
    video_path = output / f"{source.name}_recognized{FOURCC_SUFFIX.get(fourcc, '.mp4')}"
    total = min(filter(None, (max_frames, source.frame_count)), default=None)
    latest: list[Face] = []
    pending: list[tuple[int, np.ndarray, bool]] = []  # (frame index, BGR frame, recognised?)

    def flush(rows: Any, video: VideoSink) -> bool:
        """Recognise the pending key frames in one batch, then write every pending frame; True: stop asked in the window."""
        nonlocal latest
        keys = [frame for _, frame, key in pending if key]
        results = iter(recognizer([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in keys]) if keys else [])
        asked = False
        for index, frame, key in pending:
            if key:
                latest = next(results)
                rows.writerows(_rows(source.label, index, latest))
                counts.add(latest)
            annotated = draw_faces(frame, latest)
            video.write(annotated)
            asked = window.show(annotated) or asked
        pending.clear()
        return asked

    with stop_on_signals() as stop_asked, atomic_csv(csv_path, CSV_FIELDS) as rows, \
            VideoSink(video_path, source.fps, fourcc) as video:  # fmt: skip
        for index, frame in enumerate(io.progress(read_frames(source.capture, max_frames), "recognize", total=total,
                                                  enabled=progress)):  # fmt: skip
            if stop_asked():
                stopped = True
                break
            counts.read += 1
            pending.append((index, frame, index % every == 0))
            if sum(key for _, _, key in pending) >= batch_size and flush(rows, video):
                stopped = True
                break
        if pending:
            stopped = flush(rows, video) or stopped
    written = video_path if video.frames else output
    return _summary(recognizer, counts, written, csv_path, stopped, [])


def _summary(recognizer: Recognizer, counts: _Counts, output: Path, csv_path: Path, stopped: bool,
             unreadable: list[str]) -> RecognitionRun:  # fmt: skip
    seconds = time.perf_counter() - counts.start
    return RecognitionRun(
        frames=counts.frames,
        frames_read=counts.read,
        faces=counts.faces,
        known=counts.known,
        unknown=counts.faces - counts.known,
        seconds=round(seconds, 3),
        frames_s=round(counts.frames / seconds, 3) if seconds > 0 else 0.0,
        faces_s=round(counts.faces / seconds, 3) if seconds > 0 else 0.0,
        detect_s=round(recognizer.seconds["detect"], 3),
        embed_s=round(recognizer.seconds["embed"], 3),
        match_s=round(recognizer.seconds["match"], 3),
        output=str(output),
        csv=str(csv_path),
        stopped_early=stopped,
        detector=recognizer.detector.name,
        matcher=getattr(recognizer.matcher, "kind", type(recognizer.matcher).__name__),
        threshold=float(recognizer.matcher.threshold),
        unreadable=unreadable,
    )


# --------------------------------------------------------------------------------------------
# Enrolment from photos and from a camera
# --------------------------------------------------------------------------------------------


def subject_face(boxes: np.ndarray) -> tuple[Optional[int], str]:
    """Which face of a photo is the person's: the only one, or one at least twice the area of every other.

    Returns:
        ``(index, "")``, or ``(None, reason)`` when there is no face or no way to tell.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return None, "no face found"
    if len(boxes) == 1:
        return 0, ""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-areas, kind="stable")
    if areas[order[0]] >= DOMINANCE * areas[order[1]]:
        return int(order[0]), ""
    return None, f"{len(boxes)} faces and none clearly the largest: cannot tell which is the person"


def enroll_photos(
    embedder: Any,
    detector: FaceDetector,
    gallery_path: str | Path,
    images: str | Path,
    open_set_fpir: Optional[float] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Enrol every person folder of ordinary photos under ``images``: the person's face in each photo, found and aligned.

    A photo without a face, or with several and none clearly the person's (:func:`subject_face`),
    is skipped and reported, not guessed. The gallery records the detector and the alignment
    and refuses to mix them; its open-set threshold is calibrated again.

    Returns:
        ``people``, ``added``, ``skipped`` {file: reason}, ``total``, ``open_set_threshold``, ``detector``.
    """
    gallery_path = Path(gallery_path)
    people = person_folders(images)
    gallery = open_gallery(embedder, gallery_path, detector.name)
    added, skipped = 0, {}
    for name, files in io.progress(people.items(), "enrol", total=len(people), enabled=progress):
        photos, used = [], []
        for path in files:
            try:
                photos.append(read_image(path, 3))
                used.append(path)
            except ImageReadError as error:
                skipped[str(path)] = str(error)
        rows, enrolled = [], []
        for path, photo, (boxes, _) in zip(used, photos, detector.detect_batch(photos) if photos else []):
            index, reason = subject_face(boxes)
            if index is None:
                skipped[str(path)] = reason
                continue
            rows.append(embed_faces(embedder, photo, boxes[index : index + 1]))
            enrolled.append(path)
        if rows:
            added += gallery.add(name, np.concatenate(rows), enrolled)
    return _finish_enrolment(gallery, gallery_path, open_set_fpir, sorted(people), added, skipped, detector.name)


def _finish_enrolment(gallery: Gallery, path: Path, open_set_fpir: Optional[float], people: list[str], added: int,
                      skipped: dict[str, str], detector: str) -> dict[str, Any]:  # fmt: skip
    if open_set_fpir is not None:
        gallery.meta.open_set_fpir = open_set_fpir
    threshold = gallery.calibrate_open_set()
    gallery.save(path)
    return {"people": people, "added": added, "skipped": skipped, "total": len(gallery),
            "open_set_threshold": threshold if np.isfinite(threshold) else None, "detector": detector}  # fmt: skip


def enroll_stream(
    embedder: Any,
    detector: FaceDetector,
    gallery_path: str | Path,
    source: str | Source,
    name: str,
    count: int = 5,
    every: int = 1,
    max_frames: Optional[int] = None,
    open_set_fpir: Optional[float] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Enrol ``name`` from a camera (or a video): ``count`` frames that each hold the person's face clearly.

    Every ``every``-th frame is looked at; frames without a face, or with several and none clearly
    the largest, are passed over. Stops after ``count`` faces, at the end of the stream, after
    ``max_frames`` frames, or on Ctrl-C.

    Raises:
        ValueError: bad ``count`` / ``every``, or no frame held a clear face.
    """
    for flag, value in (("--count", count), ("--every", every), ("--max_frames", max_frames)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be 1 or more, got {value}")
    if not name or "/" in name:
        raise ValueError(f"--name must be a person's name without '/', got {name!r}")
    gallery_path = Path(gallery_path)
    gallery = open_gallery(embedder, gallery_path, detector.name)
    opened = open_source(source) if isinstance(source, str) else source
    if opened.kind == "images":
        opened.release()
        raise ValueError(f"--source {opened.label!r} is not a camera or a video; enrol photos with --images PEOPLE_DIR")
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    rows, labels, looked = [], [], 0
    try:
        with stop_on_signals() as stop_asked:
            frames = read_frames(opened.capture, max_frames)
            for index, frame in enumerate(io.progress(frames, f"enrol {name}", total=max_frames, enabled=progress)):
                if stop_asked() or len(rows) >= count:
                    break
                if index % every:
                    continue
                looked += 1
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                boxes, _ = detector.detect(image)
                face, _ = subject_face(boxes)
                if face is not None:
                    rows.append(embed_faces(embedder, image, boxes[face : face + 1]))
                    labels.append(f"{opened.label}@{stamp}#frame{index}")
    finally:
        opened.release()
    if not rows:
        raise ValueError(f"--source {opened.label}: none of the {looked} frames looked at held one clear face; "
                         "face the camera alone, closer, in good light")  # fmt: skip
    added = gallery.add(name, np.concatenate(rows), labels)
    result = _finish_enrolment(gallery, gallery_path, open_set_fpir, [name], added, {}, detector.name)
    result.update(captured=len(rows), looked_at=looked, wanted=count)
    return result


def check_gallery_setup(gallery: Gallery, embedder: Any, detector: Optional[str], path: str | Path,
                        enrolling: bool = False) -> list[str]:  # fmt: skip
    """The gallery's checks against a model and a detector (see :meth:`Gallery.check_setup`); notes for the user."""
    if gallery.meta.model_fingerprint != embedder.fingerprint:
        gallery.check_model(embedder, path)
    return gallery.check_setup(detector, alignment_of(getattr(embedder, "input", None)), path, enrolling)

