"""What clients send, checked before any work: uploaded images and people's names.

Every refusal is an :class:`ApiError`: an HTTP status and one line that says what was expected,
what came, and which field. The image is decoded as every facetorch reader decodes it
(:func:`~facetorch.data.images.decode_image`: EXIF orientation applied, any bit depth to 8-bit
RGB), after its header has shown that it is an image of a sane size: a decompression bomb (a small
file that would decode to a huge picture) is refused before its pixels are decoded.
"""

from __future__ import annotations

import unicodedata
from io import BytesIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from facetorch.data.images import ImageReadError, decode_image
from facetorch.recognition.gallery import UNKNOWN
from facetorch.serve.warnings_guard import LOCK

__all__ = ["MAX_NAME", "MAX_SIDE", "ApiError", "check_name", "decode_upload"]

MAX_NAME = 100  # characters of a person's name
MAX_SIDE = 20000  # pixels of an image's longer side, whatever its pixel count
BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # control, format, surrogate, private, unassigned, line breaks


class ApiError(Exception):
    """A request the service refuses: ``status`` and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


def decode_upload(data: bytes, field: str, filename: str, max_pixels: int) -> np.ndarray:
    """The uploaded image as uint8 RGB (H, W, 3).

    Raises:
        ApiError: 400 empty, truncated or damaged; 413 more than ``max_pixels`` pixels (or a side
            over :data:`MAX_SIDE`); 415 not an image.
    """
    where = f"{field} ({filename!r})" if filename else field
    if not data:
        raise ApiError(400, f"{where} is empty (0 bytes): send an image file (JPEG, PNG, WebP, ...)")
    try:
        with Image.open(BytesIO(data)) as header:  # reads the header only
            width, height = header.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(413, f"{where} would decode to more pixels than allowed ({error}); send a smaller picture") from error
    except UnidentifiedImageError as error:
        raise ApiError(415, f"{where} is not an image (not JPEG, PNG, WebP, BMP, GIF, TIFF or another format Pillow "
                            f"reads; {len(data)} bytes)") from error  # fmt: skip
    except Exception as error:  # Pillow raises many kinds on a damaged header
        raise ApiError(400, f"{where} has a damaged image header: {' '.join(str(error).split())}") from error
    if width < 1 or height < 1:
        raise ApiError(400, f"{where} is {width} x {height} pixels: an image needs at least one pixel")
    if width * height > max_pixels or max(width, height) > MAX_SIDE:
        raise ApiError(413, f"{where} is {width} x {height} pixels, over the limit of {max_pixels:,} pixels and "
                            f"{MAX_SIDE} per side (a decompression bomb?): send a smaller picture")  # fmt: skip
    try:
        with LOCK:  # decode_image uses catch_warnings, which is not thread-safe
            return decode_image(data, 3, where)
    except ImageReadError as error:
        reason = " ".join(str(error.__cause__ or error).split())
        raise ApiError(400, f"{where} cannot be decoded: {reason} (a truncated or damaged file?)") from error


def check_name(name: str) -> str:
    """A person's name as stored: stripped of surrounding spaces.

    Raises:
        ApiError: 422 empty, longer than :data:`MAX_NAME`, holding a path separator or a control
            character, ``.`` / ``..``, or ``unknown`` (what an unrecognised face is called).
    """
    stripped = name.strip()
    if not stripped:
        raise ApiError(422, "name is empty: give the person's name")
    if len(stripped) > MAX_NAME:
        raise ApiError(422, f"name is {len(stripped)} characters long; at most {MAX_NAME} are allowed")
    if "/" in stripped or "\\" in stripped or stripped in (".", ".."):
        raise ApiError(422, f"name {stripped[:40]!r} holds a path separator ('/' or '\\') or is '.' / '..': give a plain name")
    bad = [ch for ch in stripped if unicodedata.category(ch) in BAD_CATEGORIES]
    if bad:
        raise ApiError(422, f"name holds control or invisible characters ({', '.join(sorted({repr(ch) for ch in bad}))}): "
                            "give a plain name")  # fmt: skip
    if stripped.casefold() == UNKNOWN:
        raise ApiError(422, f"name {stripped!r} is what an unrecognised face is called: give the person's name")
    return stripped
