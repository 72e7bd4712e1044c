"""Reading image files, one way everywhere: EXIF orientation applied, any bit depth to uint8.

Every reader in facetorch (datasets, annotations, crop preparation, detection, the gallery,
explanations) goes through :func:`read_image`, so training and detection see the same picture of
a file. A light module: Pillow and numpy only.

- EXIF orientation is applied, as OpenCV's ``imread`` and photo viewers do, so a phone photo
  stored sideways is read upright (and its LabelMe box, drawn on the upright view, fits).
- 16-bit images (PNG ``I;16``, TIFF) keep their high byte, and 32-bit integer and float images
  are scaled to [0, 255], instead of being clipped to white.
- A file that cannot be decoded, for whatever reason Pillow gives, raises :class:`ImageReadError`
  naming the file. A truncated file is one of them, even when another library in the process
  (``face_recognition`` does, on import) has set Pillow's process-wide
  ``ImageFile.LOAD_TRUNCATED_IMAGES``, which would pad the missing part with grey.
"""

from __future__ import annotations

import threading
import warnings
from io import BytesIO
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps

__all__ = ["ImageReadError", "decode_image", "read_image", "read_image_size"]

EXIF_ORIENTATION = 0x0112
SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


class ImageReadError(OSError):
    """An image file could not be decoded (missing, empty, truncated, or not an image)."""


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _deep_to_uint8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grey: the high byte, or scaled to [0, 255]."""
    array = np.asarray(image)
    if image.mode in SIXTEEN_BIT_MODES:
        grey = (array.astype(np.uint32) >> 8).astype(np.uint8)
    elif image.mode == "F":
        values = np.nan_to_num(array.astype(np.float64))
        high = float(values.max()) if values.size else 0.0
        scale = 255.0 if high <= 1.0 else (255.0 / high if high > 255.0 else 1.0)
        grey = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    else:  # "I": 32-bit integers, often 16-bit data
        high = int(array.max()) if array.size else 0
        shift = 0 if high <= 255 else 8 if high <= 65535 else 24
        grey = (np.clip(array, 0, None).astype(np.uint64) >> shift).astype(np.uint8)
    return Image.fromarray(grey, mode="L")


def read_image(path: str | Path, channels: Optional[Literal[1, 3]] = 3) -> np.ndarray:
    """Decode an image file fully, upright, as uint8.

    Args:
        path: The image file.
        channels: 1 gives (H, W) grey, 3 gives (H, W, 3) RGB, ``None`` keeps the file's own kind
            (grey files stay (H, W), colour ones become RGB). Alpha is dropped.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image; the message names it.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"Cannot read image {str(path)!r}: the file is empty (0 bytes)")
    return _decode(path, channels, str(path))


def decode_image(data: bytes, channels: Optional[Literal[1, 3]], name: str, check_only: bool = False) -> np.ndarray:
    """Decode an encoded image (a file's bytes, e.g. from a shard) exactly as :func:`read_image` reads the file.

    Args:
        data: The encoded bytes (JPEG, PNG, PGM, ...).
        channels: As in :func:`read_image`.
        name: What to call it in an error message (the file it came from).
        check_only: Only check that it decodes; returns an empty array.

    Raises:
        ImageReadError: not a readable image; the message names it.
    """
    if not data:
        raise ImageReadError(f"Cannot read image {name!r}: no bytes (0 bytes)")
    return _decode(BytesIO(data), channels, name, check_only)


_STRICT_LOAD = threading.Lock()


def _load_whole(image: Image.Image) -> None:
    """Decode every pixel now, so that a truncated file fails here, whatever Pillow's global setting says."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        image.load()
        return
    # Someone asked Pillow to pad truncated files, for the whole process: turn it off while this
    # image loads, and put it back. The lock keeps two such loads from restoring each other's value.
    with _STRICT_LOAD:
        padding = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = padding


def _decode(source: Path | BytesIO, channels: Optional[Literal[1, 3]], name: str, check_only: bool = False) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(source) as opened:
                _load_whole(opened)
                if check_only:
                    return np.zeros(0, dtype=np.uint8)
                image = ImageOps.exif_transpose(opened) or opened
                if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
                    image = _deep_to_uint8(image)
                if channels is None:
                    target = "L" if image.mode in ("1", "L", "LA", "P") and _is_grey(image) else "RGB"
                else:
                    target = "L" if channels == 1 else "RGB"
                converted = image.convert(target)
                return np.asarray(converted, dtype=np.uint8)
    except Exception as error:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, struct.error, ...)
        in_memory = isinstance(source, BytesIO) and "cannot identify" in str(error)  # Pillow names the buffer object
        reason = "not an image Pillow can identify" if in_memory else _reason(error)
        raise ImageReadError(f"Cannot read image {name!r}: {reason}") from error


def _is_grey(image: Image.Image) -> bool:
    """Whether a 1-bit, grey or palette image holds grey pixels only."""
    if image.mode != "P":
        return True
    palette = image.convert("RGB")
    array = np.asarray(palette)
    return bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`read_image` reads it (EXIF orientation applied).

    Only the header is read.

    Raises:
        ImageReadError: the file is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as error:  # as in read_image
        raise ImageReadError(f"Cannot read image {str(path)!r}: {_reason(error)}") from error
    return (height, width) if orientation in SIDEWAYS else (width, height)
