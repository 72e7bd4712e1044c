"""Run a facetorch ONNX export with onnxruntime, numpy and OpenCV only: no torch.

A deployment installs ``onnxruntime``, ``opencv-python-headless`` and ``numpy`` (and facetorch
itself with ``pip install --no-deps``, or just copies this file's logic): this module imports
nothing else, and no facetorch module that imports torch (a test imports it with torch blocked).

:class:`OnnxModel` reads the ``facetorch`` metadata of an export (see
:mod:`facetorch.inference.export`), prepares decoded images the way the training pipeline did
(colour, centre crop, resize with the recorded interpolation) and runs them in batches.
:class:`OnnxEmbedder` is an exported ``EmbeddingTask`` behind the interface the gallery uses,
the same as :class:`facetorch.recognition.gallery.Embedder`'s:

- ``embed(images)``: decoded uint8 images (H, W) or (H, W, 3) RGB -> (N, D) float32 unit vectors;
- ``embed_files(paths, show_progress=True)``: -> (embeddings, files embedded, {file: why skipped});
- ``fingerprint`` (the checkpoint's, so a gallery enrolled from the checkpoint accepts the export
  and the other way round), ``threshold`` (the checkpoint's cosine pair threshold, NaN if none),
  ``channels``, ``embedding_dim``, ``progress``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

__all__ = ["METADATA_KEY", "ExportError", "OnnxEmbedder", "OnnxModel", "read_onnx_metadata"]

METADATA_KEY = "facetorch"  # the same key as facetorch.inference.export.METADATA_KEY (which imports torch)
FaceFinder = Callable[[np.ndarray], Optional[np.ndarray]]


class ExportError(ValueError):
    """A ``--model`` file that cannot be used: not ONNX, not a facetorch export, or another task's."""


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "running an exported model needs onnxruntime: pip install onnxruntime (or 'facetorch[export]')"
        ) from error
    return onnxruntime


def _session(path: Path, flag: str, threads: Optional[int]) -> Any:
    ort = _onnxruntime()
    if not path.exists():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist (expected an .onnx file from tools/export.py)")
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} is a folder; expected an .onnx file from tools/export.py")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{flag} {str(path)!r} is not a readable ONNX model: {first[:200]}") from error


def read_onnx_metadata(session: Any, path: str | Path, flag: str = "--model") -> dict[str, Any]:
    """The ``facetorch`` metadata object of an onnxruntime session of ``path``.

    Raises:
        ExportError: the model has no ``facetorch`` metadata, or it is not a JSON object.
    """
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ExportError(
            f"{flag} {str(path)!r} is an ONNX model without 'facetorch' metadata (not a facetorch export); "
            "export the checkpoint with tools/export.py --format onnx"
        )
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ExportError(f"{flag} {str(path)!r}: its 'facetorch' metadata is not JSON: {error}") from error
    if not isinstance(meta, dict) or "input_size" not in meta or "channels" not in meta:
        raise ExportError(f"{flag} {str(path)!r}: its 'facetorch' metadata lacks input_size / channels")
    return meta


def center_crop(image: np.ndarray, fraction: Optional[Sequence[float]]) -> np.ndarray:
    """The central ``fraction`` (height, width) of ``image``, as the training pipeline crops (no crop for ``None``)."""
    if fraction is None:
        return image
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * float(fraction[0]))), max(1, round(w * float(fraction[1])))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


class OnnxModel:
    """A facetorch ONNX export in an onnxruntime session, with the preprocessing its metadata describes.

    Args:
        path: An ``.onnx`` file written by ``tools/export.py``.
        task: When given, the task the caller needs (``EmbeddingTask``); another task's export is refused.
        flag: The option that named the file, for error messages.
        tool: Who needs the model, for error messages.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).

    Attributes:
        meta: The ``facetorch`` metadata object.
        input_size: (height, width) of the model input.
        channels: 1 (grey) or 3 (RGB).
        batch: The graph's fixed batch size, or ``None`` when any batch size runs.
    """

    def __init__(
        self,
        path: str | Path,
        task: Optional[str] = None,
        flag: str = "--model",
        tool: str = "this tool",
        threads: Optional[int] = None,
    ) -> None:
        self.path = Path(path)
        self.session = _session(self.path, flag, threads)
        self.meta = read_onnx_metadata(self.session, self.path, flag)
        if task is not None and self.meta.get("task") != task:
            raise ExportError(
                f"{flag} {str(self.path)!r} is an export of a {self.meta.get('task')}; {tool} needs an {task} export"
            )
        self.input_size = (int(self.meta["input_size"][0]), int(self.meta["input_size"][1]))
        self.channels = int(self.meta["channels"])
        self.input_name = self.meta.get("input_name") or self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        dim = self.session.get_inputs()[0].shape[0]
        self.batch = int(dim) if isinstance(dim, int) else None
        self.interpolation = getattr(cv2, str(self.meta.get("interpolation", "INTER_AREA")))
        self.center_crop = (self.meta.get("normalization") or {}).get("center_crop")

    def read(self, path: str | Path) -> Optional[np.ndarray]:
        """Decode an image file as the model's colour order: uint8 (H, W) grey or (H, W, 3) RGB; ``None`` if unreadable.

        EXIF orientation is not applied, as in training (PIL does not apply it unless asked).
        """
        data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else np.empty(0, np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
        if image is None:
            return None
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if self.channels == 1 else cv2.COLOR_BGR2RGB)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A decoded image (grey or RGB uint8) -> (C, H, W) float32 in [0, 255]: colour, centre crop, resize."""
        image = np.asarray(image)
        if self.channels == 1 and image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        elif self.channels == 3 and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        image = center_crop(image, self.center_crop)
        height, width = self.input_size
        if image.shape[:2] != (height, width):
            image = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=self.interpolation)
        if image.ndim == 2:
            image = image[..., None]
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run prepared images (N, C, H, W) float32; returns each output by name.

        A graph exported with a fixed batch runs in chunks of that size (the last one padded).
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch is None or len(batch) == self.batch:
            return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: batch})))
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(batch), self.batch):
            chunk = batch[start : start + self.batch]
            count = len(chunk)
            if count < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - count, axis=0)])
            parts.append([out[:count] for out in self.session.run(self.output_names, {self.input_name: chunk})])
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.output_names)}

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded images (any size) -> each output by name, prepared as the metadata says."""
        return self.run(np.stack([self.prepare(image) for image in images]))


def _progress(items: Iterable[Any], desc: str, enabled: bool) -> Iterator[Any]:
    """A progress bar when tqdm is there (facetorch.io's), else the plain items: tqdm is not a deployment need."""
    if enabled:
        try:
            from facetorch import io

            return io.progress(items, desc, enabled=enabled)
        except ImportError:
            pass
    return iter(items)


class OnnxEmbedder:
    """An exported ``EmbeddingTask`` with the interface of :class:`facetorch.recognition.gallery.Embedder`.

    Args:
        path: The ``.onnx`` file of an exported embedding checkpoint.
        batch_size: Images per onnxruntime run (a fixed-batch export runs in its own batch size).
        face_of: Maps a decoded image to the part to embed, or ``None`` when it holds no face
            (e.g. the largest Haar face with a margin); default: the whole image. A model trained
            on aligned faces (metadata ``align``, e.g. ``five_point``) needs one that returns the
            aligned face chip, since this module does not align.
        progress: Show a progress bar over files (on a terminal, with tqdm installed).
        flag: The option that named the file, for error messages.
        threads: onnxruntime intra-op threads.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 64,
        face_of: Optional[FaceFinder] = None,
        progress: bool = True,
        flag: str = "--model",
        threads: Optional[int] = None,
    ) -> None:
        self.model = OnnxModel(path, task="EmbeddingTask", flag=flag, tool="gallery.py", threads=threads)
        meta = self.model.meta
        if meta.get("align") and face_of is None:
            raise ExportError(
                f"{flag} {str(path)!r} was trained on {meta['align']}-aligned faces, and the ONNX path does not align them: "
                "give the model as --ckpt_path CKPT or --config CFG, which align each face as in training"
            )
        self.meta = meta
        self.channels = self.model.channels
        self.fingerprint = str(meta["fingerprint"])
        self.threshold = float(meta["threshold"]) if meta.get("threshold") is not None else float("nan")
        self.embedding_dim = int(meta["outputs"]["embedding"]["shape"][1])
        self.batch_size = batch_size
        self.progress = progress
        self._face_of = face_of

    def face_of(self, image: np.ndarray) -> Optional[np.ndarray]:
        """The part of ``image`` to embed (``None``: no face found)."""
        return image if self._face_of is None else self._face_of(image)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D) float32 of decoded images (uint8, grey (H, W) or RGB (H, W, 3))."""
        rows = [
            self.model(images[start : start + self.batch_size])["embedding"]
            for start in range(0, len(images), self.batch_size)
        ]
        if not rows:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32)

    def embed_files(self, paths: Sequence[Path], show_progress: bool = True) -> tuple[np.ndarray, list[Path], dict[Path, str]]:
        """Embed image files: the embeddings, the files embedded, and the files skipped with the reason."""
        faces, used, skipped = [], [], {}
        for path in _progress(paths, "embed", self.progress and show_progress):
            image = self.model.read(path)
            if image is None:
                skipped[Path(path)] = f"Cannot read image {str(path)!r}: OpenCV could not decode it"
                continue
            face = self.face_of(image)
            if face is None or min(face.shape[:2]) < 2:
                skipped[Path(path)] = "no face found"
                continue
            faces.append(face)
            used.append(Path(path))
        return self.embed(faces), used, skipped
