"""A multi-face recognition test set composed from single-face photos: group pictures, a video, and who is where.

:func:`compose_recognition_set` takes a folder of people (LFW's layout, one folder of photos
per person) and, optionally, ORL's, enrols some people and keeps the others as strangers:

- ``enrol/<person>/``: the enrolment photos of the enrolled people, as ordinary photos (LFW's
  whole 250x250 photos; ORL's 92x112 faces at twice their size);
- ``scenes/scene_NNN.jpg``: group pictures, each a few photos pasted side by side on a plain
  background, at random scales: OTHER photos of enrolled people and photos of people never
  enrolled; an LFW photo is cut to its middle (the face with some context), an ORL photo is
  doubled;
- ``truth.csv``: one row per pasted face, ``source, frame, x1, y1, x2, y2, name, enrolled``
  (``source`` the scene's file name, the face box in the scene's pixels: LFW's face at
  (68, 68, 182, 182) of its 250x250 photo, ORL's at (7, 22, 84, 100) of 92x112, scaled and moved
  with the photo);
- ``video.avi`` (MJPG) and ``video_truth.csv``: the scenes as a video, each held for a few
  frames (``frame`` is the video's frame index, ``source`` the video's file name);
- ``summary.json``: the counts and settings.

Everything is seeded: the same inputs and seed give the same set. Nothing is written outside
``output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.files import list_images
from facetorch.data.images import read_image

__all__ = ["LFW_FACE", "ORL_FACE", "TRUTH_FIELDS", "compose_recognition_set"]

TRUTH_FIELDS = ["source", "frame", "x1", "y1", "x2", "y2", "name", "enrolled"]
LFW_FACE = (68, 68, 182, 182)  # the face of a 250x250 deep-funneled LFW photo (where dlib's 5-point model finds it)
LFW_CUT = (40, 40, 210, 210)  # the middle of an LFW photo pasted into a scene: the face and some context
ORL_FACE = (7, 22, 84, 100)  # the face of a 92x112 ORL photo (the mean of dlib's and OpenCV's detections)
ORL_SCALE = 2.0  # ORL's faces are ~77 pixels wide: doubled, they are the size of LFW's


@dataclass(frozen=True)
class _Person:
    name: str
    photos: tuple[Path, ...]
    kind: str  # "lfw" or "orl"


def _people(root: Path, kind: str, min_photos: int) -> list[_Person]:
    if not root.is_dir():
        raise FileNotFoundError(f"--{kind} {str(root)!r} is not a folder of person folders")
    people = [_Person(d.name if kind == "lfw" else f"orl_{d.name}", tuple(list_images(d)), kind)
              for d in sorted(root.iterdir()) if d.is_dir()]  # fmt: skip
    people = [p for p in people if len(p.photos) >= min_photos]
    if not people:
        raise ValueError(f"--{kind} {str(root)!r} holds no person folder with {min_photos} or more photos")
    return people


def _tile(person: _Person, photo: Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The picture pasted into a scene (RGB) and the face box in it."""
    image = read_image(photo, 3)
    if person.kind == "orl":
        big = cv2.resize(image, None, fx=ORL_SCALE, fy=ORL_SCALE, interpolation=cv2.INTER_LINEAR)
        return big, tuple(v * ORL_SCALE for v in ORL_FACE)  # type: ignore[return-value]
    height, width = image.shape[:2]
    sx, sy = width / 250.0, height / 250.0  # LFW photos are 250x250; other sizes scale the boxes
    x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(LFW_CUT, (sx, sy, sx, sy)))
    face = (LFW_FACE[0] * sx - x1, LFW_FACE[1] * sy - y1, LFW_FACE[2] * sx - x1, LFW_FACE[3] * sy - y1)
    return image[y1:y2, x1:x2], face


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A plain, softly lit background with a little noise (no faces in it)."""
    height, width = size
    base = rng.uniform(60, 200, 3)
    tilt = rng.uniform(-40, 40, 3)
    ramp = np.linspace(-0.5, 0.5, width)[None, :, None] * tilt[None, None, :]
    picture = base[None, None, :] + ramp + rng.normal(0, 4, (height, width, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def _write_jpeg(path: Path, picture_rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(picture_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"cannot encode {path} as JPEG")
    with io.atomic_open(path, "wb") as handle:
        handle.write(data.tobytes())


def _copy(source: Path, target: Path) -> None:
    with io.atomic_open(target, "wb") as handle:
        handle.write(source.read_bytes())


def _layout(rng: np.random.Generator, tiles: Sequence[np.ndarray], size: tuple[int, int],
            scale: tuple[float, float]) -> list[tuple[int, int, float]]:  # fmt: skip
    """Non-overlapping places (left, top, scale) for the tiles: one cell each, in one row (up to 3) or two.

    A tile's scale is drawn from ``scale`` and shrunk if the tile would not fit its cell.
    """
    height, width = size
    rows = 1 if len(tiles) <= 3 else 2
    per_row = int(np.ceil(len(tiles) / rows))
    cell_w, cell_h = width // per_row, height // rows
    places = []
    for index, tile in enumerate(tiles):
        row, col = divmod(index, per_row)
        s = min(float(rng.uniform(*scale)), (cell_w - 4) / tile.shape[1], (cell_h - 4) / tile.shape[0])
        tw, th = tile.shape[1] * s, tile.shape[0] * s
        left = col * cell_w + int(rng.uniform(0, max(cell_w - tw - 1, 0)))
        top = row * cell_h + int(rng.uniform(0, max(cell_h - th - 1, 0)))
        places.append((left, top, s))
    return places


def compose_recognition_set(
    lfw: str | Path,
    output: str | Path,
    *,
    orl: Optional[str | Path] = None,
    people: int = 40,
    enrol_per_person: int = 3,
    orl_people: int = 10,
    orl_enrol_per_person: int = 5,
    scenes: int = 40,
    faces_per_scene: tuple[int, int] = (3, 6),
    stranger_share: float = 0.4,
    scene_size: tuple[int, int] = (540, 960),
    scale: tuple[float, float] = (0.75, 1.1),
    hold_frames: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a recognition test set under ``output`` (see the module docstring).

    Args:
        lfw: A folder of people, one folder of photos each (e.g. ``lfw_devtrain/images``).
        output: New or empty folder.
        orl: ORL's folder of people (``s1`` ... ``s40``), or ``None``.
        people: LFW people enrolled (the others are strangers).
        enrol_per_person: LFW photos enrolled per enrolled person; their other photos probe.
        orl_people: ORL people enrolled (the others are strangers).
        orl_enrol_per_person: ORL photos enrolled per enrolled ORL person.
        scenes: Group pictures.
        faces_per_scene: Fewest and most faces in a scene.
        stranger_share: Share of a scene's faces that are strangers (on average).
        scene_size: (height, width) of the scenes and the video.
        scale: Range of the random scale of a pasted photo.
        hold_frames: Video frames per scene.
        seed: Random seed.
        overwrite: Write into a non-empty ``output``.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: too few people or photos for the settings.
    """
    output = io.check_output_folder(output, overwrite)
    rng = np.random.default_rng(seed)
    lfw_people = _people(Path(lfw), "lfw", enrol_per_person + 1)
    if not 0 < people < len(lfw_people):
        raise ValueError(f"--people must be between 1 and {len(lfw_people) - 1} (LFW people with more than "
                         f"{enrol_per_person} photos in {lfw}), got {people}")  # fmt: skip
    order = rng.permutation(len(lfw_people))
    enrolled = [lfw_people[i] for i in order[:people]]
    strangers = [lfw_people[i] for i in order[people:]]
    enrol_counts = {p.name: enrol_per_person for p in enrolled}
    if orl is not None:
        orl_all = _people(Path(orl), "orl", orl_enrol_per_person + 1)
        if not 0 <= orl_people < len(orl_all):
            raise ValueError(f"--orl_people must be between 0 and {len(orl_all) - 1}, got {orl_people}")
        orl_order = rng.permutation(len(orl_all))
        enrolled += [orl_all[i] for i in orl_order[:orl_people]]
        strangers += [orl_all[i] for i in orl_order[orl_people:]]
        enrol_counts.update({orl_all[i].name: orl_enrol_per_person for i in orl_order[:orl_people]})

    # Enrolment photos, and the probes left over for the scenes
    probes: dict[str, list[Path]] = {}
    for person in enrolled:
        photos = list(rng.permutation(np.array(person.photos, dtype=object)))
        chosen, probes[person.name] = photos[: enrol_counts[person.name]], photos[enrol_counts[person.name] :]
        folder = output / "enrol" / person.name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in chosen:
            if person.kind == "orl":  # an ORL face is doubled, as in the scenes, so detectors see it at LFW's size
                picture = cv2.resize(read_image(photo, 3), None, fx=ORL_SCALE, fy=ORL_SCALE, interpolation=cv2.INTER_LINEAR)
                io.write_png(folder / f"{Path(photo).stem}.png", picture)
            else:
                _copy(Path(photo), folder / Path(photo).name)
    stranger_photos = {p.name: list(rng.permutation(np.array(p.photos, dtype=object))) for p in strangers}

    def draw(pool: dict[str, list[Path]], kinds: dict[str, _Person], taken: set[str]) -> Optional[tuple[_Person, Path]]:
        names = [n for n, photos in pool.items() if photos and n not in taken]
        if not names:
            return None
        name = names[int(rng.integers(len(names)))]
        return kinds[name], pool[name].pop()

    by_name = {p.name: p for p in [*enrolled, *strangers]}
    (output / "scenes").mkdir(parents=True, exist_ok=True)
    truth: list[dict[str, Any]] = []
    video_rows: list[dict[str, Any]] = []
    height, width = scene_size
    video_path = output / "video.avi"
    writer = cv2.VideoWriter(str(output / ".video.partial.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MJPG video under {output}")
    made = 0
    try:
        for scene in range(scenes):
            count = int(rng.integers(faces_per_scene[0], faces_per_scene[1] + 1))
            chosen, taken = [], set()
            for _ in range(count):
                stranger = rng.random() < stranger_share
                pick = draw(stranger_photos if stranger else probes, by_name, taken) or \
                    draw(probes if stranger else stranger_photos, by_name, taken)  # fmt: skip
                if pick is None:
                    break
                taken.add(pick[0].name)
                chosen.append(pick)
            if not chosen:
                break
            tiles = [_tile(person, photo) for person, photo in chosen]
            places = _layout(rng, [t for t, _ in tiles], scene_size, scale)
            picture = _background(rng, scene_size)
            name = f"scene_{scene:03d}.jpg"
            for (person, _), (tile, face), (left, top, s) in zip(chosen, tiles, places):
                resized = cv2.resize(tile, (max(1, int(round(tile.shape[1] * s))), max(1, int(round(tile.shape[0] * s)))),
                                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)  # fmt: skip
                th, tw = resized.shape[:2]
                picture[top : top + th, left : left + tw] = resized
                box = (left + face[0] * s, top + face[1] * s, left + face[2] * s, top + face[3] * s)
                row = {"source": name, "frame": "", **{k: f"{v:.1f}" for k, v in zip(("x1", "y1", "x2", "y2"), box)},
                       "name": person.name, "enrolled": int(person.name in enrol_counts)}  # fmt: skip
                truth.append(row)
                for hold in range(hold_frames):
                    video_rows.append({**row, "source": video_path.name, "frame": made * hold_frames + hold})
            _write_jpeg(output / "scenes" / name, picture)
            frame = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
            for _ in range(hold_frames):
                writer.write(frame)
            made += 1
        writer.release()
        (output / ".video.partial.avi").replace(video_path)
    finally:
        writer.release()
        if (output / ".video.partial.avi").exists():
            (output / ".video.partial.avi").unlink()
    io.write_csv(output / "truth.csv", TRUTH_FIELDS, truth)
    io.write_csv(output / "video_truth.csv", TRUTH_FIELDS, video_rows)
    summary = {
        "scenes": made,
        "faces": len(truth),
        "enrolled_faces": sum(r["enrolled"] for r in truth),
        "stranger_faces": sum(1 - r["enrolled"] for r in truth),
        "enrolled_people": len(enrol_counts),
        "enrolment_photos": sum(enrol_counts.values()),
        "stranger_people": len(strangers),
        "video_frames": made * hold_frames,
        "scene_size": list(scene_size),
        "seed": seed,
        "lfw": str(lfw),
        "orl": str(orl) if orl is not None else None,
    }
    io.write_json(output / "summary.json", summary)
    return summary
