"""A gallery of enrolled faces: enrol people, identify faces (or answer "unknown"), verify pairs.

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
import hashlib
import io as bytes_io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import numpy as np
import torch

from facetorch import evaluation, io
from facetorch.data.alignment import align_faces
from facetorch.data.crops import crop_box, expand_box
from facetorch.data.files import is_image_file, list_images
from facetorch.data.images import ImageReadError, read_image
from facetorch.data.transforms import InputSpec
from facetorch.inference.checkpoint import load_task

GALLERY_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1 did not record the detector and the alignment
UNKNOWN = "unknown"
SAME_IMAGE = 0.9999  # a cosine similarity this close to 1 between two names: the same image (or person) twice


class GalleryError(ValueError):
    """A gallery file that cannot be used: malformed, or made by another model."""


# ----------------------------------------------------------------------------------------------
# The embedding model of a checkpoint
# ----------------------------------------------------------------------------------------------


class FaceEmbedder(Protocol):
    """What the gallery needs of an embedding model.

    :class:`Embedder` (a checkpoint) and :class:`facetorch.inference.onnx_model.OnnxEmbedder` (an
    exported ONNX file, run without torch) both have it.

    Attributes:
        fingerprint: Which model embeds (galleries refuse another model's); an export keeps its checkpoint's.
        threshold: The model's cosine pair threshold (NaN when it never validated).
        channels: 1 (grey) or 3 (RGB): how images are decoded.
        embedding_dim: Length D of an embedding.
        progress: Whether loops over files show a progress bar.
    """

    fingerprint: str
    threshold: float
    channels: int
    embedding_dim: int
    progress: bool

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded uint8 images -> (N, D) float32 unit-length embeddings."""

    def embed_files(self, paths: Sequence[Path], show_progress: bool = True) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
        """Image files -> (embeddings, files embedded, {file: why it was skipped})."""


def haar_face_finder(margin: float = 0.2) -> Callable[[np.ndarray], Optional[np.ndarray]]:
    """A function: image -> the largest face OpenCV's Haar cascade finds, with ``margin`` on each side (None: no face)."""
    from facetorch.data.haar import HaarFaceDetector

    detector = HaarFaceDetector()

    def face_of(image: np.ndarray) -> Optional[np.ndarray]:
        box = detector.largest(image)
        if box is None:
            return None
        height, width = image.shape[:2]
        return crop_box(image, expand_box(box, margin, width, height))

    return face_of


class Embedder:
    """An :class:`~facetorch.tasks.EmbeddingTask` with its evaluation transform: from a checkpoint, or a pretrained config.

    With ``ckpt_path``, the transform (size, centre crop, normalisation, channels, alignment) is
    rebuilt from the DataModule settings saved in the checkpoint, so faces are embedded exactly as
    in validation. With ``config`` (e.g. ``configs/embedding_dlib.yaml``), the task is built from
    the config's model section (its pretrained weights, no checkpoint) and fed as its data section says.

    Args:
        ckpt_path: Checkpoint written by ``tools/train.py`` for an embedding config.
        device: Torch device to run on.
        batch_size: Images per forward pass.
        faces: ``whole`` embeds each image as it is (face crops); ``haar`` first crops the largest
            face found by OpenCV's Haar cascade, with ``margin`` added on each side.
        margin: Margin around a Haar face (or, for a model without alignment, a detector's box),
            as a fraction of its size.
        progress: Show a progress bar over files (on a terminal).
        config: A YAML config of an ``EmbeddingTask`` instead of ``ckpt_path``.
    """

    def __init__(
        self,
        ckpt_path: Optional[str | Path] = None,
        device: str = "cpu",
        batch_size: int = 64,
        faces: Literal["whole", "haar"] = "whole",
        margin: float = 0.2,
        progress: bool = True,
        config: Optional[str | Path] = None,
    ) -> None:
        from facetorch.tasks import EmbeddingTask

        if faces not in ("whole", "haar"):
            raise ValueError(f"--faces must be 'whole' or 'haar', got {faces!r}")
        if (ckpt_path is None) == (config is None):
            raise ValueError("give either --ckpt_path CKPT (a trained EmbeddingTask) or --config CFG (e.g. "
                             "configs/embedding_dlib.yaml, its pretrained network), not both or neither")  # fmt: skip
        if ckpt_path is not None:
            loaded = load_task(ckpt_path, EmbeddingTask, device, tool="gallery.py")
            self.task, self.input = loaded.task, loaded.input
            self.source = f"ckpt:{Path(ckpt_path).resolve()}"
        else:
            self.task, self.input = task_from_config(config, device)  # type: ignore[arg-type]
            self.source = f"config:{Path(config).resolve()}"  # type: ignore[arg-type]
        self.channels = self.input.channels
        self.transform = self.input.transform()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(self.task)
        self.threshold = float(self.task.threshold)
        self.embedding_dim = int(self.task.embedding_dim)
        self.faces = faces
        self.margin = margin
        self.progress = progress
        self._finish = self.input.finish()
        self._face_of = haar_face_finder(margin) if faces == "haar" else None

    @property
    def alignment(self) -> str:
        """How faces are aligned before the network: ``five_point`` or ``none``."""
        return alignment_of(self.input)

    def face_of(self, image: np.ndarray) -> Optional[np.ndarray]:
        """The part of ``image`` to embed: all of it, or the largest Haar face with a margin (None: no face)."""
        return image if self._face_of is None else self._face_of(image)

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D) float32 of decoded images (uint8 arrays, as ``read_image`` gives)."""
        return self._embed_tensors([self.transform(image) for image in images])

    @torch.no_grad()
    def embed_faces(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of the faces in ``boxes`` (N, 4) ``x1, y1, x2, y2`` pixels of one whole photo, in one batch.

        With 5-point alignment, the landmarks are found in each box and the chip is warped from
        the photo itself (as dlib's ``get_face_chip`` on a detector's box); without, the box grown
        by ``margin`` on each side is cut out and resized to the model's input.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.empty((0, self.task.embedding_dim), dtype=np.float32)
        image = to_channels(image, self.channels)
        if self.input.align is not None:
            from facetorch.models.shape_predictor import load_shape_predictor

            rects = boxes - np.array([0.0, 0.0, 1.0, 1.0])  # pixel extents -> dlib rectangles (right, bottom inclusive)
            predictor = load_shape_predictor(self.input.align_model)
            chips = align_faces(image, rects, size=self.input.image_size[0], predictor=predictor)
        else:
            height, width = image.shape[:2]
            chips = [crop_box(image, expand_box(box, self.margin, width, height)) for box in boxes]
            chips = [_resize(chip, self.input) for chip in chips]
        return self._embed_tensors([self._finish(chip) for chip in chips])

    def _embed_tensors(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        rows = []
        for start in range(0, len(tensors), self.batch_size):
            batch = torch.stack(list(tensors[start : start + self.batch_size]))
            rows.append(self.task.embed(batch.to(self.device)).float().cpu())
        if not rows:
            return np.empty((0, self.task.embedding_dim), dtype=np.float32)
        return torch.cat(rows).numpy().astype(np.float32)

    def embed_files(self, paths: Sequence[Path], show_progress: bool = True) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
        """Embed image files.

        Returns the embeddings, the files embedded, and the files skipped (unreadable, or no face
        found) with the reason. ``show_progress=False`` hides the bar (when the caller shows its own).
        """
        faces, used, skipped = [], [], {}
        for path in io.progress(paths, "embed", enabled=self.progress and show_progress):
            try:
                face = self.face_of(read_image(Path(path), self.channels))
            except ImageReadError as error:
                skipped[Path(path)] = str(error)
                continue
            if face is None or min(face.shape[:2]) < 2:
                skipped[Path(path)] = "no face found"
                continue
            faces.append(face)
            used.append(Path(path))
        return self.embed(faces), used, skipped


def alignment_of(spec: Optional[InputSpec]) -> str:
    """What a gallery records of a model's alignment: ``five_point`` or ``none``."""
    return str(spec.align) if spec is not None and spec.align is not None else "none"


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An RGB (or grey) uint8 photo with the model's channels."""
    import cv2

    if channels == 1 and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if channels == 3 and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


def _resize(chip: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A face cut out of a photo, resized to the model's input (no centre crop: the box is the face already)."""
    import cv2

    height, width = spec.image_size
    return cv2.resize(chip, (width, height), interpolation=cv2.INTER_AREA) if chip.shape[:2] != (height, width) else chip


def task_from_config(config: str | Path, device: str = "cpu") -> tuple[Any, InputSpec]:
    """The ``EmbeddingTask`` a YAML config builds (its pretrained weights, as ``evaluate.py`` without a checkpoint) and its input.

    Raises:
        FileNotFoundError: the config does not exist.
        ValueError: it is not a config of an ``EmbeddingTask``, or its sections are malformed.
    """
    import yaml

    from facetorch.tasks import EmbeddingTask

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"--config {str(path)!r} does not exist (expected a YAML file, e.g. configs/embedding_dlib.yaml)")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"--config {str(path)!r} is not valid YAML: {' '.join(str(error).split())}") from error
    model, data = values.get("model") or {}, values.get("data") or {}
    class_path = str(model.get("class_path", ""))
    if not class_path.endswith("EmbeddingTask") or "image_size" not in data:
        raise ValueError(f"--config {str(path)!r} is not an EmbeddingTask config with a data section (model.class_path is "
                         f"{class_path or 'missing'!r}); gallery.py needs one, e.g. configs/embedding_dlib.yaml")  # fmt: skip
    spec = InputSpec.from_hparams(data)
    args = dict(model.get("init_args") or {})
    args["in_channels"] = spec.channels
    task = EmbeddingTask(**args)
    return task.to(device).eval(), spec


def model_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a model's weights: galleries remember which model embedded them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith("classifier."):
            continue  # the training-only classification head does not change embeddings
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


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
            raise IsADirectoryError(f"{name} is a folder; expected a gallery .npz file (written by `gallery.py enroll`)")
        if not path.is_file():
            raise FileNotFoundError(f"{name} does not exist; create it with `gallery.py enroll`")
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


# ----------------------------------------------------------------------------------------------
# Operations behind tools/gallery.py
# ----------------------------------------------------------------------------------------------


def _file_key(path: Path | str) -> str:
    """How a gallery stores an enrolled file: an existing path resolved, any other label as it is."""
    return str(Path(path).resolve()) if os.path.exists(path) else str(path)


def _natural_key(path: Path) -> list[Any]:
    """Sort ``s2`` before ``s10`` and ``2.pgm`` before ``10.pgm``."""
    import re

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
    people = {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir()}
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
    detector and alignment, are enrolled by :func:`facetorch.inference.recognition.enroll_photos`.

    Returns:
        ``people`` (enrolled now), ``added`` images, ``skipped`` {file: reason}, ``total`` rows,
        ``open_set_threshold``.
    """
    gallery_path = Path(gallery_path)
    faces = faces or getattr(embedder, "faces", "whole")
    gallery = open_gallery(embedder, gallery_path, "haar_largest" if faces == "haar" else "whole")
    added, skipped = 0, {}
    people = person_folders(images)
    for name, files in io.progress(people.items(), "enrol", total=len(people), enabled=embedder.progress):
        embeddings, used, missed = embedder.embed_files(files, show_progress=False)
        added += gallery.add(name, embeddings, used)
        skipped.update({str(k): v for k, v in missed.items()})
    if open_set_fpir is not None:
        gallery.meta.open_set_fpir = open_set_fpir
    threshold = gallery.calibrate_open_set()
    gallery.save(gallery_path)
    return {"people": sorted(people), "added": added, "skipped": skipped, "total": len(gallery),
            "open_set_threshold": threshold}


def open_gallery(embedder: FaceEmbedder, gallery_path: str | Path, detector: str) -> Gallery:
    """The gallery to enrol faces of ``detector`` into: the file's (same model, alignment and detector), else a new one.

    Raises:
        GalleryError: the file is not a gallery, or another model, alignment or detector made it.
    """
    gallery_path = Path(gallery_path)
    if not gallery_path.exists():
        return Gallery.empty(embedder, detector)
    gallery = Gallery.load(gallery_path)
    gallery.check_model(embedder, gallery_path)
    gallery.check_setup(detector, alignment_of(getattr(embedder, "input", None)), gallery_path, enrolling=True)
    if not gallery.meta.model:
        gallery.meta.model = getattr(embedder, "source", "")
    return gallery


def probe_files(images: str | Path) -> list[Path]:
    """One image file, or every image under a folder (recursively)."""
    source = Path(images)
    if source.is_file():
        if not is_image_file(source):
            raise ValueError(f"--images {str(source)!r} is not an image file")
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"--images {str(source)!r} does not exist")
    files = sorted(p for p in source.rglob("*") if is_image_file(p))
    if not files:
        raise ValueError(f"--images {str(source)!r} holds no image")
    return files


def identify(
    embedder: Embedder, gallery: Gallery, images: str | Path, threshold: Optional[float] = None
) -> list[dict[str, Any]]:
    """Rows ``file, name, similarity, error`` for each probe image (name ``unknown`` below the threshold)."""
    files = probe_files(images)
    embeddings, used, skipped = embedder.embed_files(files)
    answers = dict(zip(used, gallery.identify(embeddings, threshold))) if used else {}
    rows = []
    for path in files:
        if path in answers:
            name, score = answers[path]
            rows.append({"file": str(path), "name": name, "similarity": f"{score:.4f}", "error": ""})
        else:
            rows.append({"file": str(path), "name": "", "similarity": "", "error": skipped[path]})
    return rows


def verify(embedder: Embedder, image1: str | Path, image2: str | Path, threshold: Optional[float] = None) -> dict[str, Any]:
    """Whether two images show the same person: cosine similarity against the threshold."""
    embeddings, used, skipped = embedder.embed_files([Path(image1), Path(image2)])
    if skipped:
        raise ValueError("; ".join(f"{path}: {reason}" for path, reason in skipped.items()))
    threshold = embedder.threshold if threshold is None else threshold
    similarity = float(embeddings[0] @ embeddings[1])
    return {"similarity": similarity, "threshold": threshold, "same": bool(similarity >= threshold)}


def evaluate_open_set(
    embedder: Embedder,
    gallery: Gallery,
    known: str | Path,
    unknown: str | Path,
    threshold: Optional[float] = None,
    fpirs: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """Open-set identification of probes of enrolled people and of people never enrolled.

    The probes are ``known/<person>/*`` and ``unknown/<person>/*``.

    Returns:
        ``identification_rate`` and ``unknown_rejection_rate`` at the threshold (the gallery's
        default unless given), the same two at the checkpoint's pair threshold
        (``..._at_pair_threshold``), ``dir_at_fpir_<f>`` for each FPIR, ``rank1_acc`` (known probes,
        no threshold), ``svm_acc`` and ``knn_acc`` (a linear SVM and 1-NN fitted on the enrolled
        embeddings, scored on the known probes), ``threshold``, ``pair_threshold``, ``num_known``,
        ``num_unknown``, ``num_samples``.
    """
    threshold = gallery.default_threshold() if threshold is None else threshold
    scores, predicted, truth, known_embeddings = [], [], [], []
    for folder, is_known in ((known, True), (unknown, False)):
        label = "known" if is_known else "unknown"
        people = person_folders(folder, flag=f"--{label}")
        for name, files in io.progress(people.items(), label, total=len(people), enabled=embedder.progress):
            if is_known and name not in gallery.people:
                enrolled = len(gallery.people)
                raise GalleryError(f"{folder}/{name}: a known probe of a person not in the gallery ({enrolled} enrolled)")
            embeddings, used, _ = embedder.embed_files(files, show_progress=False)
            if not used:
                continue
            names, best = gallery.best_matches(embeddings)
            if is_known:
                known_embeddings.append(embeddings)
            scores.extend(best.tolist())
            predicted.extend(names)
            truth.extend([name if is_known else None] * len(used))
    report: dict[str, Any] = evaluation.open_set_metrics(scores, predicted, truth, threshold)
    at_pair = evaluation.open_set_metrics(scores, predicted, truth, gallery.meta.threshold)
    report["identification_rate_at_pair_threshold"] = at_pair["identification_rate"]
    report["unknown_rejection_rate_at_pair_threshold"] = at_pair["unknown_rejection_rate"]
    for fpir in fpirs:
        report[f"dir_at_fpir_{fpir:g}"] = evaluation.dir_at_fpir(scores, predicted, truth, fpir)
    known_mask = np.array([t is not None for t in truth])
    report["rank1_acc"] = float(np.mean(np.array(predicted)[known_mask] == np.array(truth, dtype=object)[known_mask]))
    report["threshold"] = float(threshold)
    report["pair_threshold"] = float(gallery.meta.threshold)
    if known_embeddings and len(gallery.people) >= 2:
        # Closed set, as the original project did: classifiers fitted on the enrolled embeddings.
        closed = evaluation.classifier_accuracy(
            gallery.embeddings, gallery.meta.names, np.concatenate(known_embeddings), [t for t in truth if t is not None]
        )
        report["svm_acc"], report["knn_acc"] = closed["svm_acc"], closed["knn_acc"]
    return report
