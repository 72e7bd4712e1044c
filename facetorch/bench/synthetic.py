"""Generated data sets for scale measurements: many identities of small synthetic faces, or empty files.

Nothing here is real face data. Each identity is a fixed random face-like pattern (an ellipse of
its own colour, size and tilt with two eyes and a mouth); each of its images shifts, lights and
blurs that pattern differently and adds noise, so images of one identity look alike and differ
from other identities'. Written as JPEG files in the ``identity_folders`` layout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facetorch import io

__all__ = ["synthetic_face", "write_empty_tree", "write_synthetic_faces"]


def _identity(rng: np.random.Generator, size: int) -> dict[str, Any]:
    return {
        "skin": rng.uniform(80, 230, 3), "background": rng.uniform(0, 120, 3), "axes": rng.uniform(0.28, 0.42, 2) * size,
        "tilt": rng.uniform(-0.3, 0.3), "eye_gap": rng.uniform(0.12, 0.22) * size, "eye_y": rng.uniform(-0.18, -0.05) * size,
        "mouth_w": rng.uniform(0.08, 0.2) * size, "mouth_y": rng.uniform(0.12, 0.25) * size,
    }  # fmt: skip


def synthetic_face(rng: np.random.Generator, person: dict[str, Any], size: int) -> np.ndarray:
    """One (size, size, 3) uint8 image of ``person`` (from :func:`_identity`), with its own shift, light and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, size * 0.04, 2)
    c, s = np.cos(person["tilt"]), np.sin(person["tilt"])
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    face = (u / person["axes"][0]) ** 2 + (v / person["axes"][1]) ** 2 < 1
    image = np.where(face[..., None], person["skin"], person["background"]).astype(np.float32)
    eye = max(1.0, size * 0.045)
    for side in (-1, 1):
        image[(u - side * person["eye_gap"]) ** 2 + (v - person["eye_y"]) ** 2 < eye**2] = 25
    image[(np.abs(u) < person["mouth_w"]) & (np.abs(v - person["mouth_y"]) < eye * 0.6)] = 60
    image = image * rng.uniform(0.75, 1.25) + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_faces(
    root: str | os.PathLike[str], identities: int, per_identity: int, size: int = 64, seed: int = 0,
    quality: int = 90, show_progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Write ``identities`` folders of ``per_identity`` JPEG faces under ``root``; returns counts, bytes and seconds."""
    root = Path(root)
    start = time.perf_counter()
    total = 0
    for k in io.progress(range(identities), "write", enabled=show_progress):
        rng = np.random.default_rng([seed, k])
        person = _identity(rng, size)
        folder = root / f"id{k:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_identity):
            path = folder / f"{i:04d}.jpg"
            Image.fromarray(synthetic_face(rng, person, size)).save(path, quality=quality)
            total += path.stat().st_size
    seconds = time.perf_counter() - start
    return {"output": str(root), "identities": identities, "images": identities * per_identity, "size": size,
            "bytes": total, "seconds": round(seconds, 1)}  # fmt: skip


def write_empty_tree(root: str | os.PathLike[str], identities: int, per_identity: int) -> dict[str, Any]:
    """``identities`` folders of ``per_identity`` empty ``.jpg`` files: enough to time a folder scan."""
    root = Path(root)
    start = time.perf_counter()
    for k in range(identities):
        folder = root / f"id{k:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_identity):
            with open(folder / f"{i:04d}.jpg", "wb"):
                pass
    return {"output": str(root), "identities": identities, "images": identities * per_identity, "empty": True,
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
