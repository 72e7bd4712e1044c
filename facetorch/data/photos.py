"""The one place recognition, enrolment and the composed test sets read photos from disk.

Everything that reads a whole photo for recognition goes through :func:`read_photo`, so the
reader (EXIF orientation, 16-bit images, ...) can change in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facetorch.data.datasets import ImageReadError, read_image

__all__ = ["ImageReadError", "read_photo"]


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """A photo as uint8 RGB (H, W, 3).

    Raises:
        ImageReadError: the file is missing, truncated or not an image; the message names it.
    """
    return read_image(Path(path), 3)
