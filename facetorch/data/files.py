"""Which files are images (a light module: no torch, no Lightning)."""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with one of :data:`IMAGE_EXTENSIONS`."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))
