"""The embedding model of a checkpoint or a pretrained config, as recognition uses it.

:class:`Embedder` turns decoded images (or the faces in boxes of a photo, aligned when the model
was trained aligned) into unit-length embeddings; :class:`FaceEmbedder` is what galleries and the
recognition pipeline need of any embedding model (an :class:`Embedder`, or an exported ONNX file
run by :class:`facetorch.inference.onnx_model.OnnxEmbedder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import numpy as np
import torch

from facetorch import io
from facetorch.boxes import crop_box, expand_box
from facetorch.data.alignment import chips_at, landmarks
from facetorch.data.images import ImageReadError, read_image
from facetorch.data.transforms import InputSpec
from facetorch.inference.checkpoint import load_task, model_fingerprint

__all__ = ["Embedder", "FaceEmbedder", "alignment_of", "haar_face_finder", "task_from_config", "to_channels"]

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
        return self.embed_tensors([self.transform(image) for image in images])

    @torch.no_grad()
    def embed_faces(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of the faces in ``boxes`` (N, 4) ``x1, y1, x2, y2`` pixels of one whole photo, in one batch.

        With 5-point alignment, the landmarks are found in each box and the chip is warped from
        the photo itself (as dlib's ``get_face_chip`` on a detector's box); without, the box grown
        by ``margin`` on each side is cut out and resized to the model's input.
        """
        return self.embed_tensors(self.face_tensors(image, boxes))

    def face_tensors(self, image: np.ndarray, boxes: np.ndarray) -> list[torch.Tensor]:
        """The network's input tensors of the faces in ``boxes`` of one photo, aligned or cut out as :meth:`embed_faces` does.

        The faces of several photos can then be embedded in one batch by :meth:`embed_tensors`.
        """
        return self.aligned_tensors(image, boxes)[0]

    def aligned_tensors(self, image: np.ndarray, boxes: np.ndarray) -> tuple[list[torch.Tensor], Optional[np.ndarray]]:
        """:meth:`face_tensors` and the 5 landmarks (N, 5, 2) they were aligned by (None without 5-point alignment).

        A caller that also wants the landmarks (a face's pose) gets them without running the model twice.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return [], None
        image = to_channels(image, self.channels)
        points = None
        if self.input.align is not None:
            from facetorch.models.shape_predictor import load_shape_predictor

            rects = boxes - np.array([0.0, 0.0, 1.0, 1.0])  # pixel extents -> dlib rectangles (right, bottom inclusive)
            predictor = load_shape_predictor(self.input.align_model)
            points = landmarks(image, rects, predictor)
            chips = chips_at(image, points, size=self.input.image_size[0])
        else:
            height, width = image.shape[:2]
            chips = [crop_box(image, expand_box(box, self.margin, width, height)) for box in boxes]
            chips = [_resize(chip, self.input) for chip in chips]
        return [self._finish(chip) for chip in chips], points

    @torch.no_grad()
    def embed_tensors(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Embeddings (N, D) float32 of prepared input tensors (:meth:`face_tensors`), ``batch_size`` at a time."""
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
    from facetorch.tasks import EmbeddingTask

    path = Path(config)
    values = io.read_config(path)
    model, data = values.get("model") or {}, values.get("data") or {}
    class_path = str(model.get("class_path", "")) if isinstance(model, dict) else ""
    if not class_path.endswith("EmbeddingTask") or not isinstance(data, dict) or "image_size" not in data:
        raise ValueError(f"--config {str(path)!r} is not an EmbeddingTask config with a data section (model.class_path is "
                         f"{class_path or 'missing'!r}); gallery.py needs one, e.g. configs/embedding_dlib.yaml")  # fmt: skip
    spec = InputSpec.from_hparams(data)
    args = dict(model.get("init_args") or {})
    args["in_channels"] = spec.channels
    try:
        task = EmbeddingTask(**args)
    except TypeError as error:  # a key EmbeddingTask does not take
        raise ValueError(f"--config {str(path)!r}: model.init_args: {error}") from error
    return task.to(device).eval(), spec

