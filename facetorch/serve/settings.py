"""How a worker builds the service: :class:`Settings` (what the command line was given), the models, the app.

``facetorch serve`` puts the settings in the environment (``FACETORCH_SERVE_SETTINGS``, JSON; the
key file's path, never a key) and uvicorn calls :func:`app_from_env` once in each worker, so every
worker loads the model and the detector once, at its start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from fastapi import FastAPI

__all__ = ["ENV", "Settings", "app_from_env", "build_app"]

ENV = "FACETORCH_SERVE_SETTINGS"


@dataclass(frozen=True)
class Settings:
    """What one worker needs to serve (see ``facetorch serve --help`` for each)."""

    gallery: str
    config: Optional[str] = None
    ckpt_path: Optional[str] = None
    detector: Optional[str] = None
    device: Optional[str] = None
    upsample: int = 0
    threshold: Optional[float] = None
    pair_threshold: Optional[float] = None
    api_keys: Optional[str] = None
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_side: int = 1920
    max_images: int = 20
    batch_window_ms: float = 5.0
    max_batch: int = 8
    threads: Optional[int] = None

    def to_env(self) -> str:
        """The settings as the JSON of :data:`ENV`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        """The settings ``facetorch serve`` left in :data:`ENV`."""
        text = os.environ.get(ENV)
        if not text:
            raise ValueError(f"{ENV} is not set: start the service with `facetorch serve` (tools/serve.py)")
        return cls(**json.loads(text))


def _device(settings: Settings) -> str:
    import torch

    return settings.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _models(settings: Settings) -> tuple[Any, Any]:
    """The embedder (``--config`` / ``--ckpt_path``) and the detector (``--detector``, else the gallery's, else dlib_cnn)."""
    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.detectors import DETECTOR_NAMES, build_face_detector
    from facetorch.serve.people import recorded_detector

    if (settings.config is None) == (settings.ckpt_path is None):
        raise ValueError("give the embedding model once: --config CFG (e.g. configs/embedding_dlib.yaml) or --ckpt_path CKPT")
    device = _device(settings)
    name = settings.detector
    if name is None:
        recorded = recorded_detector(settings.gallery)
        if recorded is not None and recorded.startswith("ckpt:"):
            raise ValueError(f"--gallery {settings.gallery!r} was enrolled with a detector checkpoint ({recorded}): "
                             "pass --detector CKPT")  # fmt: skip
        name = recorded if recorded in DETECTOR_NAMES else "dlib_cnn"
    embedder = Embedder(settings.ckpt_path, device=device, progress=False, config=settings.config)
    return embedder, build_face_detector(name, device=device, upsample=settings.upsample)


def build_app(settings: Settings, embedder: Any = None, detector: Any = None) -> FastAPI:
    """The app of ``settings``, with its models loaded (or the ``embedder`` and ``detector`` given, for tests).

    Raises:
        ValueError, OSError: a bad setting, a missing file, a gallery of another model (one line each).
    """
    from facetorch.serve.app import create_app
    from facetorch.serve.auth import load_keys
    from facetorch.serve.engine import Engine
    from facetorch.serve.people import People

    keys = load_keys(settings.api_keys)
    if settings.threads is not None and settings.threads < 1:
        raise ValueError(f"--threads must be 1 or more, got {settings.threads}")
    least = {"max_upload_mb": 0.001, "max_pixels": 1, "max_side": 1, "max_images": 1, "max_batch": 1, "batch_window_ms": 0}
    for key, smallest in least.items():
        value = getattr(settings, key)
        if value < smallest:
            raise ValueError(f"--{key} must be {smallest} or more, got {value}")
    if embedder is None or detector is None:
        embedder, detector = _models(settings)
    people = People(settings.gallery, embedder, detector.name, settings.threshold)
    engine = Engine(embedder, detector, people, window_s=settings.batch_window_ms / 1000, max_batch=settings.max_batch,
                    max_side=settings.max_side, pair_threshold=settings.pair_threshold, threads=settings.threads,
                    batch_detector=_device(settings).startswith("cuda"))  # fmt: skip
    return create_app(engine, keys, settings.max_upload_mb, settings.max_pixels, settings.max_images)


def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker: the app of the settings in :data:`ENV`."""
    return build_app(Settings.from_env())
