"""The faces of a photo collection: found, aligned, scored for quality, embedded; and collections with a truth file."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.files import is_image_file, list_images
from facetorch.data.images import ImageReadError, read_image
from facetorch.recognition.clustering.graph import LFW_FACE_FRACTIONS, TRUTH_FIELDS, TRUTH_NAME, _unit

# ----------------------------------------------------------------------------------------------
# Faces of a collection: found, aligned, scored for quality, embedded
# ----------------------------------------------------------------------------------------------

SIZE_REFERENCE = 80.0  # a face this many pixels wide (or more) has size quality 1 (dlib_cnn's window is 80 pixels)
SHARPNESS_REFERENCE = 60.0  # the variance of the Laplacian of the face at 64x64 above which it counts as sharp
QUALITY_SIDE = 64  # faces are compared for sharpness at this size


@dataclass
class FaceTable:
    """The faces of a collection, one row each: where, how good, and their embeddings.

    Attributes:
        sources: The photo of each face (a path as given).
        boxes: (N, 4) ``x1, y1, x2, y2`` in the photo's pixels.
        detection: (N,) the detector's scores.
        quality: (N,) quality in [0, 1] (:func:`face_quality`).
        embeddings: (N, D) float32 unit-length embeddings.
    """

    sources: list[str]
    boxes: np.ndarray
    detection: np.ndarray
    quality: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, rows: np.ndarray | Sequence[int]) -> FaceTable:
        rows = np.asarray(rows, dtype=np.int64)
        return FaceTable([self.sources[i] for i in rows.tolist()], self.boxes[rows], self.detection[rows],
                         self.quality[rows], self.embeddings[rows])  # fmt: skip

    @classmethod
    def empty(cls, dim: int) -> FaceTable:
        return cls([], np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, dim), np.float32))

    @classmethod
    def concat(cls, tables: Sequence[FaceTable]) -> FaceTable:
        return cls([s for t in tables for s in t.sources], np.concatenate([t.boxes for t in tables]),
                   np.concatenate([t.detection for t in tables]), np.concatenate([t.quality for t in tables]),
                   np.concatenate([t.embeddings for t in tables]))  # fmt: skip


@dataclass
class FoundFaces:
    """What :func:`find_faces` found: the faces, the photos without one or unreadable, and the time per stage."""

    faces: FaceTable
    photos: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def face_quality(image: np.ndarray, box: Sequence[float], points: Optional[np.ndarray] = None) -> dict[str, float]:
    """How usable a face is for telling people apart: ``size``, ``sharpness``, ``pose`` in [0, 1], and their product ``quality``.

    - ``size``: the box's shorter side over :data:`SIZE_REFERENCE` pixels (at most 1);
    - ``sharpness``: the variance of the Laplacian of the face scaled to 64x64 grey, over
      :data:`SHARPNESS_REFERENCE` (at most 1): a blurred face has few edges;
    - ``pose``: from the 5 landmarks (dlib's order: two corners of one eye, two of the other, the
      base of the nose): 1 when the nose sits midway between the eyes, falling to 0 as it reaches
      an eye (a profile); 1 without landmarks.

    Args:
        image: The photo, uint8 RGB (H, W, 3) or grey (H, W).
        box: ``x1, y1, x2, y2`` pixels.
        points: (5, 2) landmarks ``x, y`` in the photo's pixels, or None.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(0.0, min(x2 - x1, y2 - y1))
    size = min(1.0, side / SIZE_REFERENCE)
    height, width = image.shape[:2]
    left, top = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    right, bottom = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
    sharpness = 0.0
    if right - left >= 2 and bottom - top >= 2:
        crop = image[top:bottom, left:right]
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
        grey = cv2.resize(grey, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA)
        sharpness = min(1.0, float(cv2.Laplacian(grey, cv2.CV_64F).var()) / SHARPNESS_REFERENCE)
    pose = 1.0
    if points is not None and len(points) == 5:
        p = np.asarray(points, dtype=np.float64)
        eye_a, eye_b, nose = p[0:2].mean(axis=0), p[2:4].mean(axis=0), p[4]
        axis = eye_a - eye_b
        span = float(np.linalg.norm(axis))
        if span > 1e-6:
            along = float((nose - (eye_a + eye_b) / 2) @ axis) / (span * span / 2)  # -1 / +1: the nose under an eye
            pose = float(np.clip(1.0 - abs(along), 0.0, 1.0))
        else:
            pose = 0.0
    return {"size": size, "sharpness": sharpness, "pose": pose, "quality": size * sharpness * pose}


class _Chips:
    """The batched path of an aligned :class:`~facetorch.inference.embedder.Embedder`: 5 points, chips, one forward per batch.

    The same numbers as ``Embedder.embed_faces`` (the landmarks and the chip are made the same
    way), but the chips of many photos go through the network together; the landmarks also give
    the pose for the quality.
    """

    def __init__(self, embedder: Any) -> None:
        from facetorch.models.shape_predictor import load_shape_predictor

        spec = embedder.input
        self.embedder = embedder
        self.size = int(spec.image_size[0])
        self.finish = spec.finish()
        self.predictor = load_shape_predictor(spec.align_model)

    @staticmethod
    def supports(embedder: Any) -> bool:
        spec = getattr(embedder, "input", None)
        return (getattr(spec, "align", None) == "five_point" and hasattr(embedder, "task")
                and spec.image_size[0] == spec.image_size[1])  # fmt: skip

    def points(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from facetorch.data.alignment import landmarks

        return landmarks(image, boxes - np.array([0.0, 0.0, 1.0, 1.0]), self.predictor)

    def chips(self, image: np.ndarray, points: np.ndarray) -> list[Any]:
        from facetorch.data.alignment import chip_transform, extract_chip

        return [self.finish(extract_chip(image, chip_transform(p, self.size), self.size)) for p in points]

    def embed(self, tensors: Sequence[Any]) -> np.ndarray:
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(tensors), self.embedder.batch_size):
                batch = torch.stack(list(tensors[start : start + self.embedder.batch_size]))
                rows.append(self.embedder.task.embed(batch.to(self.embedder.device)).float().cpu())
        return torch.cat(rows).numpy().astype(np.float32)


def find_faces(
    files: Sequence[Path | str],
    embedder: Any,
    detector: Any,
    *,
    photos_per_batch: int = 8,
    chips_per_batch: int = 64,
    progress: bool = True,
    on_skip: Optional[Callable[[str, str], None]] = None,
) -> FoundFaces:
    """Find, align, score and embed every face of every photo.

    Args:
        files: The photos.
        embedder: An :class:`~facetorch.inference.embedder.Embedder` (5-point aligned ones run batched) or
            anything with ``embed_faces(image, boxes)`` (or ``embed``, see
            :func:`facetorch.recognition.pipeline.embed_faces`).
        detector: A face detector (``detect_batch``).
        photos_per_batch: Photos given to the detector at once.
        chips_per_batch: Faces gathered before one embedding pass (the network's own ``batch_size``
            still bounds a forward pass).
        progress: A progress bar on a terminal.
        on_skip: Called with (file, reason) for each photo that is unreadable or has no face.

    Returns:
        The faces (in the order of ``files``, then the detector's), the skipped photos and the seconds per stage.
    """
    from facetorch.recognition.pipeline import embed_faces

    dim = int(getattr(embedder, "embedding_dim", 0))
    chips = _Chips(embedder) if _Chips.supports(embedder) else None
    channels = int(getattr(embedder, "channels", 3))
    seconds = {"read": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0}
    skipped: dict[str, str] = {}
    tables: list[FaceTable] = []
    pending: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Any]]] = []
    waiting = 0

    def skip(path: str, reason: str) -> None:
        skipped[path] = reason
        if on_skip is not None:
            on_skip(path, reason)

    def flush() -> None:
        nonlocal waiting
        if not pending:
            return
        start = time.perf_counter()
        embeddings = chips.embed([t for *_, tensors in pending for t in tensors])  # type: ignore[union-attr]
        seconds["embed"] += time.perf_counter() - start
        sources = [s for names, *_ in pending for s in names]
        tables.append(FaceTable(sources, np.concatenate([p[1] for p in pending]), np.concatenate([p[2] for p in pending]),
                                np.concatenate([p[3] for p in pending]), embeddings))  # fmt: skip
        pending.clear()
        waiting = 0

    files = [str(f) for f in files]
    for start in io.progress(range(0, len(files), photos_per_batch), "faces", enabled=progress):
        batch, images = [], []
        began = time.perf_counter()
        for path in files[start : start + photos_per_batch]:
            try:
                images.append(read_image(path, 3))
                batch.append(path)
            except ImageReadError as error:
                skip(path, f"unreadable: {' '.join(str(error).split())}")
        detected = time.perf_counter()
        seconds["read"] += detected - began
        found = detector.detect_batch(images) if images else []
        seconds["detect"] += time.perf_counter() - detected
        for path, image, (boxes, scores) in zip(batch, images, found):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if len(boxes) == 0:
                skip(path, "no face found")
                continue
            began = time.perf_counter()
            picture = _channels(image, channels)
            points = chips.points(picture, boxes) if chips is not None else [None] * len(boxes)
            quality = np.array([face_quality(image, box, p)["quality"] for box, p in zip(boxes, points)], np.float32)
            if chips is not None:
                tensors = chips.chips(picture, points)
                seconds["align"] += time.perf_counter() - began
                pending.append(([path] * len(boxes), boxes, np.asarray(scores, np.float32), quality, tensors))
                waiting += len(boxes)
                if waiting >= chips_per_batch:
                    flush()
                continue
            seconds["align"] += time.perf_counter() - began
            began = time.perf_counter()
            embeddings = np.asarray(embed_faces(embedder, image, boxes), dtype=np.float32)
            seconds["embed"] += time.perf_counter() - began
            tables.append(FaceTable([path] * len(boxes), boxes, np.asarray(scores, np.float32), quality, embeddings))
    flush()
    faces = FaceTable.concat(tables) if tables else FaceTable.empty(dim)
    faces.embeddings = _unit(faces.embeddings) if len(faces) else faces.embeddings
    return FoundFaces(faces, len(files), skipped, {k: round(v, 3) for k, v in seconds.items()})


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1 and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image


# ----------------------------------------------------------------------------------------------
# Collections
# ----------------------------------------------------------------------------------------------


def collection_files(images: str | Path, flag: str = "--images") -> list[Path]:
    """Every image file under a folder (recursively, sorted), or one image file.

    Raises:
        FileNotFoundError: nothing there. ValueError: no image in it.
    """
    root = Path(images)
    if root.is_file():
        if not is_image_file(root):
            raise ValueError(f"{flag} {str(root)!r} is not an image file (or a folder of photos)")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{flag} {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if is_image_file(p) and not any(part.startswith(".") for part in p.parts))
    if not files:
        raise ValueError(f"{flag} {str(root)!r} holds no image file (searched recursively)")
    return files


def make_cluster_set(
    roots: Sequence[str | Path],
    output: str | Path,
    *,
    seed: int = 0,
    max_per_person: Optional[int] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A collection to cluster, with its truth: the photos of folders of people, under shuffled names in one folder.

    ``output/photos/photo_NNNNN.<ext>`` holds the photos (copied), ``output/truth.csv`` says who is in
    each (``source, x1, y1, x2, y2, person``: the file name and the face's box, where a deep-funneled
    LFW photo holds it: (68, 68, 182, 182) of 250x250, scaled to the photo's size), and
    ``output/summary.json`` the counts. People of the same folder name under several roots are one
    person.

    Args:
        roots: Folders of ``<person>/<photos>``.
        output: New or empty folder.
        seed: Shuffles the names and draws the photos kept.
        max_per_person: Keep a random number of each person's photos, from 1 to this many (at most
            all of them): a collection unlike the roots' (None: every photo).
        overwrite: Write into a non-empty folder.
    """
    from facetorch.data.images import read_image_size

    output = io.check_output_folder(output, overwrite)
    if max_per_person is not None and max_per_person < 1:
        raise ValueError(f"--max_per_person must be 1 or more, got {max_per_person}")
    people: dict[str, list[Path]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"--images {str(root)!r} is not a folder of person folders")
        for folder in sorted(d for d in root.iterdir() if d.is_dir()):
            people.setdefault(folder.name, []).extend(list_images(folder))
    people = {name: files for name, files in people.items() if files}
    if not people:
        raise ValueError(f"--images {', '.join(map(str, roots))}: no person folder with photos (expected ROOT/<person>/<photo>)")
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, Path]] = []
    for name, files in people.items():
        if max_per_person is not None:
            count = int(rng.integers(1, min(len(files), max_per_person) + 1))
            files = [files[i] for i in sorted(rng.choice(len(files), count, replace=False).tolist())]
        chosen.extend((name, f) for f in files)
    order = rng.permutation(len(chosen))
    rows = []
    for number, index in enumerate(order.tolist()):
        name, path = chosen[index]
        target = output / "photos" / f"photo_{number:05d}{path.suffix.lower()}"
        with io.atomic_open(target, "wb") as handle:
            handle.write(path.read_bytes())
        width, height = read_image_size(path)
        fx1, fy1, fx2, fy2 = LFW_FACE_FRACTIONS
        rows.append({"source": target.name, "x1": round(fx1 * width), "y1": round(fy1 * height), "x2": round(fx2 * width),
                     "y2": round(fy2 * height), "person": name})  # fmt: skip
    io.write_csv(output / TRUTH_NAME, TRUTH_FIELDS, rows)
    counts = np.bincount(np.unique([r["person"] for r in rows], return_inverse=True)[1])
    summary = {"photos": len(rows), "people": int(len(counts)), "people_with_one_photo": int((counts == 1).sum()),
               "most_photos": int(counts.max()), "seed": seed, "max_per_person": max_per_person,
               "roots": [str(r) for r in roots], "output": str(output)}  # fmt: skip
    io.write_json(output / "summary.json", summary)
    return summary
