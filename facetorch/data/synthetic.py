"""Small generated data sets in every layout, for tests, demos and benchmarks that must not need real photos.

The images are synthetic but have what each task needs: face-like ellipses and textures
(``face_crops``), one distinct pattern per person (``identity_folders``), and photos with one
bright square "face" and its LabelMe box (``labelme``). Seeded: the same call writes the same files.

For scale measurements, :func:`write_synthetic_faces` writes many identities of small synthetic
faces: each identity is a fixed random face-like pattern (an ellipse of its own colour, size and
tilt with two eyes and a mouth), and each of its images shifts, lights and blurs that pattern
differently and adds noise, so images of one identity look alike and differ from other
identities'. :func:`write_empty_tree` writes empty files in the same layout, for indexing benchmarks.
Nothing here is real face data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facetorch import io

__all__ = [
    "face_like", "non_face", "square_face_photo", "synthetic_face", "write_empty_tree", "write_face_crops",
    "write_identity_folders", "write_labelme_folder", "write_synthetic_faces",
]


def face_like(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A bright ellipse with two dark 'eyes' on a dark, noisy background (uint8, H x W)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h / 2 + rng.uniform(-1, 1), w / 2 + rng.uniform(-1, 1)
    image = ((yy - cy) / (0.4 * h)) ** 2 + ((xx - cx) / (0.35 * w)) ** 2 < 1
    out = np.where(image, 200, 40).astype(np.float64)
    for ex in (cx - w * 0.15, cx + w * 0.15):
        out[(yy - (cy - h * 0.1)) ** 2 + (xx - ex) ** 2 < (0.06 * w) ** 2 + 1] = 30
    out += rng.normal(0, 10, size)
    return np.clip(out, 0, 255).astype(np.uint8)


def non_face(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth random texture (uint8, H x W)."""
    coarse = rng.uniform(0, 255, (4, 4))
    image = np.kron(coarse, np.ones((size[0] // 4 + 1, size[1] // 4 + 1)))[: size[0], : size[1]]
    return np.clip(image + rng.normal(0, 20, size), 0, 255).astype(np.uint8)


def write_face_crops(root: Path, per_class: int = 12, size: tuple[int, int] = (30, 20), seed: int = 0) -> Path:
    """Write the face_crops layout (PNG faces, JPEG non-faces) under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "face").mkdir(parents=True, exist_ok=True)
    (root / "non_face").mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        Image.fromarray(face_like(rng, size)).save(root / "face" / f"f{i:03d}.png")
        Image.fromarray(non_face(rng, size)).save(root / "non_face" / f"n{i:03d}.jpg", quality=95)
    return root


def write_identity_folders(
    root: Path, identities: int = 6, per_identity: int = 5, size: tuple[int, int] = (28, 24), seed: int = 0
) -> Path:
    """Write the identity_folders layout: each identity a distinct pattern plus noise (PGM and PNG)."""
    rng = np.random.default_rng(seed)
    for k in range(identities):
        folder = root / f"person_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 255, (4, 4))
        for i in range(per_identity):
            image = np.kron(base, np.ones((size[0] // 4 + 1, size[1] // 4 + 1)))[: size[0], : size[1]]
            image = np.clip(image + rng.normal(0, 15, size), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / (f"{i}.pgm" if i % 2 else f"{i}.png"))
    (root / "README").write_text("loose files beside the identity folders are ignored\n")
    return root


def square_face_photo(
    rng: np.random.Generator, size: tuple[int, int], box: tuple[int, int, int, int] | None
) -> np.ndarray:
    """An RGB photo (uint8, H x W x 3): a dark noisy background and a bright square "face".

    The face has two dark "eyes" and fills ``box`` = (x1, y1, x2, y2) pixels (no face when ``box`` is None).
    """
    h, w = size
    image = np.clip(rng.normal(50, 12, (h, w, 3)), 0, 255)
    if box is not None:
        x1, y1, x2, y2 = box
        image[y1:y2, x1:x2] = (220, 190, 170)
        eye = max(1, (x2 - x1) // 8)
        for ex in (x1 + (x2 - x1) // 3, x1 + 2 * (x2 - x1) // 3):
            ey = y1 + (y2 - y1) // 3
            image[ey - eye : ey + eye, ex - eye : ex + eye] = 30
    return image.astype(np.uint8)


def write_labelme_folder(
    root: Path, count: int = 16, size: tuple[int, int] = (48, 64), negatives: int = 3, seed: int = 0
) -> Path:
    """Write the labelme layout: JPEG photos with a square face and a LabelMe 5 JSON beside each.

    Every other rectangle is in reverse drag order. ``negatives`` photos have no face: the first
    without a JSON file, the others with a JSON that has no shape.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(count + negatives):
        has_face = i < count
        side = int(rng.integers(min(h, w) // 3, min(h, w) // 2 + 1))
        x1, y1 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        box = (x1, y1, x1 + side, y1 + side) if has_face else None
        Image.fromarray(square_face_photo(rng, size, box)).save(root / f"p{i:03d}.jpg", quality=95)
        if i == count:
            continue  # a negative without any JSON file
        corners = [[x1, y1], [x1 + side, y1 + side]]
        shapes = [{"label": "face", "points": corners[::-1] if i % 2 else corners, "group_id": None,
                   "shape_type": "rectangle", "flags": {}}] if has_face else []
        data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"p{i:03d}.jpg",
                "imageData": None, "imageHeight": h, "imageWidth": w}
        (root / f"p{i:03d}.json").write_text(json.dumps(data))
    return root

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
