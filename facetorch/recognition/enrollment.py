"""Enroll people into a gallery: folders of face crops or of ordinary photos, a camera, and the open-set protocol.

Each person is added in one transaction of the gallery's store (:mod:`facetorch.recognition.database`),
so an enrolment stopped half way keeps the people it finished, whole. Every way of enrolling ends
the same way (:func:`_finish_enrollment`): the gallery's open-set threshold is calibrated again. A
photo without a face is skipped and reported; in a photo with several faces the person's is the
one that matches their other photos, else ``--pick``'s (:mod:`facetorch.recognition.subjects`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.files import is_image_file, list_images
from facetorch.data.images import ImageReadError, read_image
from facetorch.inference.embedder import FaceEmbedder, alignment_of
from facetorch.recognition.database import FaceGallery, open_gallery
from facetorch.recognition.detectors import FaceDetector
from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.pipeline import embed_faces, embed_faces_of
from facetorch.recognition.stores import check_name
from facetorch.recognition.streams import Source, open_source, read_frames, stop_on_signals
from facetorch.recognition.subjects import choose_faces, subject_face

__all__ = [
    "check_gallery_setup",
    "enroll",
    "enroll_photos",
    "enroll_stream",
    "NothingEnrolled",
    "gallery_for",
    "person_folders",
    "Subject",
    "split_open_set",
    "subject_face",
    "subject_faces",
]


class NothingEnrolled(ValueError):
    """An enrolment that added nobody while images were skipped: a run that did nothing is not a success."""


@contextmanager
def _undone_when_nothing_enrolled(target: str | Path) -> Iterator[None]:
    """A gallery file that this enrolment creates is removed again when it enrolled nobody: a failed run leaves no trace."""
    text = str(target)
    path = Path(text.removeprefix("sqlite:///")) if "://" not in text or text.startswith("sqlite:///") else None
    created = path is not None and not path.exists()
    try:
        yield
    except NothingEnrolled:
        if created and path is not None:
            for leftover in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal", ".faiss"))):
                leftover.unlink(missing_ok=True)
        raise


def _natural_key(path: Path) -> list[Any]:
    """Sort ``s2`` before ``s10`` and ``2.pgm`` before ``10.pgm``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def split_open_set(
    images: str | Path, output: str | Path, people: int, per_person: int, overwrite: bool = False
) -> dict[str, int]:
    """Copy a folder of people into an open-set protocol: ``enrol/``, ``known/`` and ``unknown/``.

    ``enrol/`` gets the first ``per_person`` images of the first ``people`` people (in natural
    name order), ``known/`` their other images, and ``unknown/`` every image of the others.

    Raises:
        FileExistsError: ``output`` exists and is not empty, and ``overwrite`` is false.
        ValueError: too few people, or an enrolled person without an image left to probe.
    """
    output = io.check_output_folder(output, overwrite)
    folders = sorted((Path(images) / name for name in person_folders(images)), key=_natural_key)
    if not 0 < people < len(folders):
        raise ValueError(f"--people must be between 1 and {len(folders) - 1} (of {len(folders)} people), got {people}")
    counts = {"enrol": 0, "known": 0, "unknown": 0}
    for rank, folder in enumerate(folders):
        files = sorted(list_images(folder), key=_natural_key)
        if rank < people and len(files) <= per_person:
            raise ValueError(f"{folder}: {len(files)} images leave none to probe after enrolling {per_person}")
        parts = {"unknown": files} if rank >= people else {"enrol": files[:per_person], "known": files[per_person:]}
        for part, chosen in parts.items():
            target = output / part / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                with io.atomic_open(target / path.name, "wb") as handle:
                    handle.write(path.read_bytes())
            counts[part] += len(chosen)
    return counts


def person_folders(images: str | Path, flag: str = "--images") -> dict[str, list[Path]]:
    """``images/<person>/<images>`` -> {person: files}; people without images are left out.

    ``flag`` is the option that named the folder, for the messages.
    """
    root = Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"{flag} {str(root)!r} is not a folder of person folders")
    entries = sorted(root.iterdir())
    people = {d.name: list_images(d) for d in entries if d.is_dir()}
    loose = [p.name for p in entries if is_image_file(p)]
    if loose:
        io.notice(f"{flag} {str(root)!r}: {len(loose)} image(s) beside the person folders are not read (each person's "
                  f"images go in {root}/<name>/): {io.first_few(loose)}")  # fmt: skip
    empty = [name for name, files in people.items() if not files]
    if empty and len(empty) < len(people):
        io.notice(f"{flag} {str(root)!r}: {len(empty)} person folder(s) hold no image and are left out: {io.first_few(empty)}")
    people = {name: files for name, files in people.items() if files}
    if not people:
        raise ValueError(f"{flag} {str(root)!r} holds no person folder with images (expected {root}/<name>/<image>)")
    return people


def enroll(
    embedder: FaceEmbedder,
    gallery_path: str | Path,
    images: str | Path,
    open_set_fpir: Optional[float] = None,
    faces: Optional[str] = None,
) -> dict[str, Any]:
    """Enrol every person folder of face crops (or the largest Haar face of each image) into the gallery (created if missing).

    Then the gallery's open-set threshold is calibrated again (at ``open_set_fpir``, else at the
    gallery's own setting). ``faces`` (``whole`` or ``haar``) says how ``embedder`` finds the face,
    which the gallery records (default: the embedder's ``faces``). Ordinary photos, with a face
    detector and alignment, are enrolled by :func:`enroll_photos`.

    Returns:
        ``people`` (enrolled now), ``added`` images, ``skipped`` {file: reason}, ``total`` rows,
        ``open_set_threshold``.
    """
    faces = faces or getattr(embedder, "faces", "whole")
    people = _named_folders(images)
    with _undone_when_nothing_enrolled(gallery_path):
        gallery = gallery_for(embedder, gallery_path, "haar_largest" if faces == "haar" else "whole")
        try:
            added, skipped = 0, {}
            for name, files in io.progress(people.items(), "enroll", total=len(people), enabled=embedder.progress):
                embeddings, used, missed = embedder.embed_files(files, show_progress=False)
                added += gallery.add(name, embeddings, used)
                skipped.update({str(k): v for k, v in missed.items()})
            return _finish_enrollment(gallery, open_set_fpir, sorted(people), added, skipped, gallery.meta.detector)
        finally:
            gallery.close()


def _named_folders(images: str | Path) -> dict[str, list[Path]]:
    """:func:`person_folders`, each folder's name checked as a person's name before anything is enrolled."""
    people = person_folders(images)
    for name in people:
        try:
            check_name(name)
        except ValueError as error:
            raise ValueError(f"--images {str(images)!r}: the folder {name!r} cannot name a person: {error}") from error
    return people


def gallery_for(embedder: FaceEmbedder, target: str | Path, detector: str) -> FaceGallery:
    """The gallery to enrol faces of ``detector`` into: the store's (same model, alignment and detector), else a new one.

    Raises:
        GalleryError: not a gallery, another model, alignment or detector made it, or it is read-only (.npz).
    """
    alignment = alignment_of(getattr(embedder, "input", None))
    settings = {"threshold": float(embedder.threshold), "model": getattr(embedder, "source", ""), "detector": detector,
                "alignment": alignment}  # fmt: skip
    gallery = open_gallery(target, create=True, dim=int(embedder.embedding_dim), fingerprint=embedder.fingerprint,
                           settings=settings)  # fmt: skip
    try:
        if gallery.store.read_only:
            from facetorch.recognition.stores.npz import read_only_message

            raise GalleryError(read_only_message(str(target)) if str(target).endswith(".npz") else
                               f"{gallery.target} is read-only for this user; enrol into a gallery you may write")  # fmt: skip
        gallery.check_model(embedder, target)
        gallery.check_setup(detector, alignment, target, enrolling=True)
        if not gallery.meta.model and settings["model"]:
            gallery.configure(model=settings["model"])
    except BaseException:
        gallery.close()
        raise
    return gallery


@dataclass(frozen=True)
class Subject:
    """The person's face of one photo: its box and embedding, or why there is none (``reason``; a note when picked)."""

    box: Optional[np.ndarray]  # (4,) x1, y1, x2, y2 pixels
    embedding: Optional[np.ndarray]  # (D,)
    reason: str = ""


def subject_faces(embedder: Any, detector: FaceDetector, photos: Sequence[np.ndarray], pick: str = "central") -> list[Subject]:
    """The person's face in each photo (:func:`~facetorch.recognition.subjects.choose_faces`), found in one detector batch.

    The chosen faces are embedded in one batch. A photo without a face, or with several and none
    the person's by ``pick``, gets the reason instead.
    """
    found = [boxes for boxes, _ in detector.detect_batch(photos)] if len(photos) else []
    chosen, notes = choose_faces(found, [p.shape[:2] for p in photos],
                                 lambda k, boxes: embed_faces(embedder, photos[k], boxes),
                                 pick, float(getattr(embedder, "threshold", float("nan"))))  # fmt: skip
    boxes = [b[i : i + 1] if i is not None else b[:0] for b, i in zip(found, chosen)]
    rows = embed_faces_of(embedder, photos, boxes)
    return [Subject(box[0], row[0], note) if i is not None else Subject(None, None, note)
            for box, row, i, note in zip(boxes, rows, chosen, notes)]  # fmt: skip


def enroll_photos(
    embedder: Any,
    detector: FaceDetector,
    gallery_path: str | Path,
    images: str | Path,
    open_set_fpir: Optional[float] = None,
    progress: bool = True,
    pick: str = "central",
) -> dict[str, Any]:
    """Enrol every person folder of ordinary photos under ``images``: the person's face in each photo, found and aligned.

    A photo without a face is skipped and reported. In a photo with several faces and none
    clearly the largest, the person's face is the one that matches their other photos, else
    ``pick``'s (``central``, ``largest``, or ``ask``: skipped); the summary says which was taken
    (:func:`~facetorch.recognition.subjects.choose_faces`). The gallery records the detector and
    the alignment and refuses to mix them; its open-set threshold is calibrated again.

    Returns:
        ``people``, ``added``, ``skipped`` {file: reason}, ``picked`` {file: which face}, ``total``,
        ``open_set_threshold``, ``detector``.
    """
    people = _named_folders(images)
    with _undone_when_nothing_enrolled(gallery_path):
        gallery = gallery_for(embedder, gallery_path, detector.name)
        try:
            added, skipped, picked = 0, {}, {}
            for name, files in io.progress(people.items(), "enroll", total=len(people), enabled=progress):
                photos, used = [], []
                for path in files:
                    try:
                        photos.append(read_image(path, 3))
                        used.append(path)
                    except ImageReadError as error:
                        skipped[str(path)] = str(error)
                found = [boxes for boxes, _ in detector.detect_batch(photos)] if photos else []
                chosen, notes = choose_faces(found, [p.shape[:2] for p in photos],
                                             lambda k, boxes: embed_faces(embedder, photos[k], boxes),  # noqa: B023 (used now)
                                             pick, float(getattr(embedder, "threshold", float("nan"))))  # fmt: skip
                rows, enrolled = [], []
                for path, photo, boxes, index, note in zip(used, photos, found, chosen, notes):
                    if index is None:
                        skipped[str(path)] = note
                        continue
                    if note:
                        picked[str(path)] = note
                    rows.append(embed_faces(embedder, photo, boxes[index : index + 1]))
                    enrolled.append(path)
                if rows:
                    added += gallery.add(name, np.concatenate(rows), enrolled)
            result = _finish_enrollment(gallery, open_set_fpir, sorted(people), added, skipped, detector.name)
        finally:
            gallery.close()
        return {**result, "picked": picked}


def _finish_enrollment(gallery: FaceGallery, open_set_fpir: Optional[float], people: list[str], added: int,
                       skipped: dict[str, str], detector: Optional[str]) -> dict[str, Any]:  # fmt: skip
    """Calibrate the open-set threshold again and say what was done (a NaN threshold as None).

    Every person is already stored (one transaction each); the threshold is stored with the settings.

    Raises:
        ValueError: nothing was added and images were skipped: a run that did nothing is not a success
            (images enrolled already are not an error).
    """
    if added == 0 and skipped:
        reasons = "; ".join(f"{Path(file).name}: {reason}" for file, reason in list(skipped.items())[:3])
        raise NothingEnrolled(f"nothing was enrolled from {len(people)} person folder(s): {len(skipped)} image(s) skipped"
                         f"{' (' + reasons + (', ...' if len(skipped) > 3 else '') + ')' if skipped else ''}; "
                         f"{gallery.target} holds what it held before")  # fmt: skip
    if added == 0:
        io.notice(f"nothing new to enrol: every image of {', '.join(people[:3])}{', ...' if len(people) > 3 else ''} is "
                  f"in {gallery.target} already")  # fmt: skip
    if open_set_fpir is not None:
        gallery.configure(open_set_fpir=float(open_set_fpir))
    threshold = gallery.calibrate_open_set()
    return {"people": people, "added": added, "skipped": skipped, "total": len(gallery), "total_people": gallery.num_people,
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
    check_name(name, "--name")
    opened = open_source(source) if isinstance(source, str) else source
    if opened.kind == "images":
        opened.release()
        raise ValueError(f"--source {opened.label!r} is not a camera or a video; enrol photos with --images PEOPLE_DIR")
    try:
        gallery = gallery_for(embedder, gallery_path, detector.name)
    except BaseException:
        opened.release()
        raise
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    rows, labels, looked = [], [], 0
    try:
        with stop_on_signals() as stop_asked:
            frames = read_frames(opened.capture, max_frames)
            for index, frame in enumerate(io.progress(frames, f"enroll {name}", total=max_frames, enabled=progress)):
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
    except BaseException:
        gallery.close()
        raise
    finally:
        opened.release()
    try:
        if not rows:
            raise ValueError(f"--source {opened.label}: none of the {looked} frames looked at held one clear face; "
                             "face the camera alone, closer, in good light")  # fmt: skip
        added = gallery.add(name, np.concatenate(rows), labels)
        result = _finish_enrollment(gallery, open_set_fpir, [name], added, {}, detector.name)
    finally:
        gallery.close()
    result.update(captured=len(rows), looked_at=looked, wanted=count)
    return result


def check_gallery_setup(gallery: FaceGallery, embedder: Any, detector: Optional[str], path: str | Path,
                        enrolling: bool = False) -> list[str]:  # fmt: skip
    """The gallery's checks against a model and a detector (see :meth:`FaceGallery.check_setup`); notes for the user."""
    if gallery.meta.model_fingerprint != embedder.fingerprint:
        gallery.check_model(embedder, path)
    return gallery.check_setup(detector, alignment_of(getattr(embedder, "input", None)), path, enrolling)
