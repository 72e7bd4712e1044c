"""A test video of moving faces composed from single-face photos, with the truth of every frame.

:func:`compose_moving_video` (``gallery.py compose --video``) enrols some people of a folder of
people (LFW's layout) and keeps the others as strangers, then films faces crossing a plain,
softly lit frame as a static camera would:

- ``enrol/<person>/``: the enrolment photos of the enrolled people (ordinary LFW photos);
- ``video.avi`` (MJPG): ``tracks`` faces, each one person (enrolled or a stranger) entering,
  crossing and leaving the frame or wandering inside it, growing or shrinking as it goes, with
  motion blur when fast, a drifting brightness, and camera noise; a face changes photo (other
  photos of the same person, never an enrolment one) with a short cross-fade now and then, as a
  head turns; faces pass in front of each other;
- ``video_truth.csv``: one row per visible face and frame, ``source, frame, x1, y1, x2, y2, name,
  enrolled, track`` (the face box in the video's pixels, clipped to the frame; a face less than
  ``visible`` visible, behind another face or out of the frame, has no row);
- ``summary.json``: the counts and settings.

Everything is seeded: the same inputs and seed give the same video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facetorch import io
from facetorch.data.scenes import TRUTH_FIELDS, _background, _copy, _people, _Person, _tile

__all__ = ["VIDEO_TRUTH_FIELDS", "compose_moving_video", "compose_photo_sequence_video"]

VIDEO_TRUTH_FIELDS = [*TRUTH_FIELDS, "track"]
FADE = 4  # frames of a cross-fade between two photos of a track


@dataclass
class _Track:
    person: _Person
    photos: list[np.ndarray]  # RGB tiles, each with its face box at the same place
    face: tuple[float, float, float, float]  # the face box in a tile
    start: int
    length: int
    centre0: np.ndarray  # the tile's centre at the first and the last frame
    centre1: np.ndarray
    scale0: float
    scale1: float
    gain_phase: float

    def at(self, frame: int) -> tuple[np.ndarray, float, float]:
        """(centre, scale, time fraction) of the track at ``frame``."""
        t = (frame - self.start) / max(self.length - 1, 1)
        return self.centre0 + t * (self.centre1 - self.centre0), self.scale0 + t * (self.scale1 - self.scale0), t

    def picture(self, t: float) -> np.ndarray:
        """The tile at time fraction ``t``: photo after photo, cross-faded at each change."""
        span = self.length / len(self.photos)
        position = t * (self.length - 1)
        index = min(int(position // span), len(self.photos) - 1)
        into = position - index * span
        tile = self.photos[index]
        if index > 0 and into < FADE:  # still fading in from the previous photo
            alpha = (into + 1) / (FADE + 1)
            tile = cv2.addWeighted(tile, alpha, self.photos[index - 1], 1 - alpha, 0)
        return tile


def _path(rng: np.random.Generator, size: tuple[int, int], tile: float) -> tuple[np.ndarray, np.ndarray]:
    """Where a track starts and ends: across the frame (left-right or right-left) mostly, else wandering inside."""
    height, width = size
    y0, y1 = rng.uniform(tile * 0.5, height - tile * 0.5, 2)
    if rng.random() < 0.7:  # enters on one side, leaves on the other
        left, right = -tile * 0.3, width + tile * 0.3
        x0, x1 = (left, right) if rng.random() < 0.5 else (right, left)
    else:
        x0, x1 = rng.uniform(tile * 0.6, width - tile * 0.6, 2)
    return np.array([x0, y0]), np.array([x1, y1])


def _paste(canvas: np.ndarray, owner: np.ndarray, tile: np.ndarray, left: int, top: int, track: int) -> None:
    """Paste ``tile`` at (left, top), clipped to the canvas; ``owner`` records which track each pixel shows."""
    height, width = canvas.shape[:2]
    th, tw = tile.shape[:2]
    x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + tw, width), min(top + th, height)
    if x2 <= x1 or y2 <= y1:
        return
    canvas[y1:y2, x1:x2] = tile[y1 - top : y2 - top, x1 - left : x2 - left]
    owner[y1:y2, x1:x2] = track


def compose_moving_video(
    lfw: str | Path,
    output: str | Path,
    *,
    people: int = 20,
    enrol_per_person: int = 3,
    tracks: int = 12,
    frames: int = 160,
    stranger_share: float = 0.4,
    photos_per_track: int = 3,
    size: tuple[int, int] = (540, 960),
    scale: tuple[float, float] = (0.7, 1.2),
    visible: float = 0.7,
    fps: float = 10.0,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a moving-faces test video and its truth under ``output`` (see the module docstring).

    Args:
        lfw: A folder of people, one folder of photos each (e.g. ``lfw_devtrain/images``).
        output: New or empty folder.
        people: People enrolled (the others are strangers).
        enrol_per_person: Photos enrolled per enrolled person; their other photos are filmed.
        tracks: Faces filmed, each a different person.
        frames: Frames of the video.
        stranger_share: Share of the tracks that are strangers (at least one of each kind when ``tracks`` >= 2).
        photos_per_track: Photos a track shows one after the other (fewer when the person has fewer).
        size: (height, width) of the video.
        scale: Range of a track's scale at its start and at its end (1.0: LFW's 114-pixel face).
        visible: Least visible share of a face box for a truth row.
        fps: Frames per second written in the video.
        seed: Random seed.
        overwrite: Write into a non-empty ``output``.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: too few people or photos for the settings.
    """
    output = io.check_output_folder(output, overwrite)
    for flag, value in (("--tracks", tracks), ("--frames", frames), ("--per_person", enrol_per_person)):
        if value < 1:
            raise ValueError(f"{flag} must be 1 or more, got {value}")
    rng = np.random.default_rng(seed)
    everyone = _people(Path(lfw), "lfw", enrol_per_person + 1)
    if not 0 < people < len(everyone):
        raise ValueError(f"--people must be between 1 and {len(everyone) - 1} (people with more than {enrol_per_person} "
                         f"photos in {lfw}), got {people}")  # fmt: skip
    order = rng.permutation(len(everyone))
    enrolled, strangers = [everyone[i] for i in order[:people]], [everyone[i] for i in order[people:]]
    probes: dict[str, list[Path]] = {}
    for person in enrolled:
        photos = list(rng.permutation(np.array(person.photos, dtype=object)))
        probes[person.name] = photos[enrol_per_person:]
        folder = output / "enrol" / person.name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in photos[:enrol_per_person]:
            _copy(Path(photo), folder / Path(photo).name)
    for person in strangers:
        probes[person.name] = list(rng.permutation(np.array(person.photos, dtype=object)))

    kinds = [bool(rng.random() < stranger_share) for _ in range(tracks)]
    if tracks >= 2 and len(set(kinds)) == 1:  # both kinds, so both rates are measured
        kinds[int(rng.integers(tracks))] = not kinds[0]
    pools = {True: list(rng.permutation(len(strangers))), False: list(rng.permutation(len(enrolled)))}
    filmed: list[_Track] = []
    for stranger in kinds:
        if not pools[stranger]:
            raise ValueError(f"--tracks {tracks}: more {'strangers' if stranger else 'enrolled people'} needed than there are")
        person = (strangers if stranger else enrolled)[pools[stranger].pop()]
        tiles = [_tile(person, photo) for photo in probes[person.name][:photos_per_track]]
        length = int(rng.integers(max(2, int(frames * 0.3)), max(3, int(frames * 0.7)) + 1))
        start = int(rng.integers(-length // 4, max(frames - length // 2, 1)))
        tile_side = tiles[0][0].shape[1]
        centre0, centre1 = _path(rng, size, tile_side)
        scale0, scale1 = (float(v) for v in rng.uniform(*scale, 2))
        filmed.append(_Track(person, [t for t, _ in tiles], tiles[0][1], start, length, centre0, centre1, scale0, scale1,
                             float(rng.uniform(0, 2 * np.pi))))  # fmt: skip

    stranger_names = {p.name for p in strangers}
    background = _background(rng, size)
    height, width = size
    rows: list[dict[str, Any]] = []
    video_path, partial = output / "video.avi", output / ".video.partial.avi"
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MJPG video under {output}")
    try:
        for frame in range(frames):
            canvas = background.copy()
            owner = np.full(size, -1, dtype=np.int32)
            boxes: dict[int, tuple[float, float, float, float]] = {}
            for index, track in enumerate(filmed):  # later tracks pass in front
                if not track.start <= frame < track.start + track.length:
                    continue
                centre, s, t = track.at(frame)
                tile = track.picture(t)
                tw, th = max(2, int(round(tile.shape[1] * s))), max(2, int(round(tile.shape[0] * s)))
                tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
                speed = float(np.linalg.norm(track.centre1 - track.centre0)) / max(track.length - 1, 1)
                if speed > 6:  # a fast face is smeared along its way, as by a camera's exposure
                    kernel_length = int(min(speed / 3, 9)) | 1
                    kernel = np.zeros((kernel_length, kernel_length), np.float32)
                    direction = (track.centre1 - track.centre0) / max(np.linalg.norm(track.centre1 - track.centre0), 1e-6)
                    half = kernel_length // 2
                    for k in np.linspace(-half, half, kernel_length):
                        kernel[int(round(half + k * direction[1])), int(round(half + k * direction[0]))] = 1
                    tile = cv2.filter2D(tile, -1, kernel / kernel.sum())
                gain = 1.0 + 0.15 * np.sin(track.gain_phase + frame / 7.0)
                tile = np.clip(tile.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                left, top = int(round(centre[0] - tw / 2)), int(round(centre[1] - th / 2))
                _paste(canvas, owner, tile, left, top, index)
                fx1, fy1, fx2, fy2 = track.face
                boxes[index] = (left + fx1 * s, top + fy1 * s, left + fx2 * s, top + fy2 * s)
            for index, (x1, y1, x2, y2) in boxes.items():
                cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
                if cx2 <= cx1 or cy2 <= cy1:
                    continue
                seen = (owner[int(cy1) : int(np.ceil(cy2)), int(cx1) : int(np.ceil(cx2))] == index).sum()
                if seen < visible * (x2 - x1) * (y2 - y1):
                    continue
                person = filmed[index].person
                rows.append({"source": video_path.name, "frame": frame, "x1": f"{cx1:.1f}", "y1": f"{cy1:.1f}",
                             "x2": f"{cx2:.1f}", "y2": f"{cy2:.1f}", "name": person.name,
                             "enrolled": int(person.name not in stranger_names), "track": index})  # fmt: skip
            noisy = canvas.astype(np.float32) + rng.normal(0, 3, canvas.shape)
            writer.write(cv2.cvtColor(np.clip(noisy, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        writer.release()
        partial.replace(video_path)
    finally:
        writer.release()
        if partial.exists():
            partial.unlink()
    io.write_csv(output / "video_truth.csv", VIDEO_TRUTH_FIELDS, rows)
    summary = {
        "frames": frames,
        "tracks": len(filmed),
        "stranger_tracks": int(sum(kinds)),
        "face_frames": len(rows),
        "enrolled_face_frames": sum(r["enrolled"] for r in rows),
        "stranger_face_frames": sum(1 - r["enrolled"] for r in rows),
        "enrolled_people": len(enrolled),
        "enrolment_photos": len(enrolled) * enrol_per_person,
        "size": list(size),
        "fps": fps,
        "seed": seed,
        "lfw": str(lfw),
    }
    io.write_json(output / "summary.json", summary)
    return summary


def _taken(photo: Path) -> tuple[int, str]:
    """ORL's order of taking: 1.pgm, 2.pgm, ..., 10.pgm."""
    return (len(photo.stem), photo.stem)


def compose_photo_sequence_video(
    orl: str | Path,
    output: str | Path,
    *,
    people: int = 20,
    enrol_per_person: int = 3,
    subjects: int = 12,
    stranger_share: float = 0.4,
    hold: int = 4,
    fps: float = 10.0,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A "recording" from ORL's photo sequences: each subject's photos of one scene in order, one subject after another.

    ORL photographed each of its 40 people ten times against the same dark background, at
    different times, with the head turning, tilting and changing expression: the nearest thing to
    a recording of a face in ``../shared/data``. Each subject's photos that were not enrolled are
    played in their file order, each held ``hold`` frames with a two-frame cross-fade, at twice
    their size (as ``gallery.py compose`` doubles ORL); subjects follow each other with a cut (a
    new face in the same place: the tracks must notice). Writes ``enrol/``, ``video.avi``,
    ``video_truth.csv`` (ORL's face box, doubled, in every frame; ``track`` the subject's turn) and
    ``summary.json``.

    Raises:
        FileExistsError: ``output`` is not empty and ``overwrite`` is false.
        ValueError: too few people or photos for the settings.
    """
    from facetorch.data.images import read_image
    from facetorch.data.scenes import ORL_FACE, ORL_SCALE

    output = io.check_output_folder(output, overwrite)
    rng = np.random.default_rng(seed)
    everyone = _people(Path(orl), "orl", enrol_per_person + 2)
    if not 0 < people < len(everyone):
        raise ValueError(f"--people must be between 1 and {len(everyone) - 1} (ORL people in {orl}), got {people}")
    order = rng.permutation(len(everyone))
    enrolled, strangers = [everyone[i] for i in order[:people]], [everyone[i] for i in order[people:]]

    def doubled(photo: Path) -> np.ndarray:
        return cv2.resize(read_image(photo, 3), None, fx=ORL_SCALE, fy=ORL_SCALE, interpolation=cv2.INTER_LINEAR)

    filmed: list[tuple[_Person, list[Path]]] = []
    for person in enrolled:
        photos = sorted(person.photos, key=_taken)
        chosen = set(rng.choice(len(photos), enrol_per_person, replace=False).tolist())
        folder = output / "enrol" / person.name
        folder.mkdir(parents=True, exist_ok=True)
        for k in sorted(chosen):
            io.write_png(folder / f"{photos[k].stem}.png", doubled(photos[k]))
        filmed.append((person, [p for k, p in enumerate(photos) if k not in chosen]))
    strangers_filmed = [(p, sorted(p.photos, key=_taken)) for p in strangers]
    kinds = [bool(rng.random() < stranger_share) for _ in range(subjects)]
    pools = {False: [filmed[i] for i in rng.permutation(len(filmed))], True: [strangers_filmed[i] for i in
             rng.permutation(len(strangers_filmed))]}  # fmt: skip
    video_path, partial = output / "video.avi", output / ".video.partial.avi"
    box = tuple(v * ORL_SCALE for v in ORL_FACE)
    rows: list[dict[str, Any]] = []
    writer: Any = None
    frame = 0
    try:
        for turn, stranger in enumerate(kinds):
            if not pools[stranger]:
                raise ValueError(f"--tracks {subjects}: more {'strangers' if stranger else 'enrolled people'} needed than "
                                 f"ORL has ({len(strangers)} strangers, {len(enrolled)} enrolled)")  # fmt: skip
            person, photos = pools[stranger].pop()
            pictures = [doubled(p) for p in photos]
            for k, picture in enumerate(pictures):
                for h in range(hold):
                    alpha = 1.0 if k == 0 or h >= 2 else (h + 1) / 3  # a two-frame cross-fade from the photo before
                    shown = cv2.addWeighted(picture, alpha, pictures[k - 1], 1 - alpha, 0) if alpha < 1 else picture
                    if writer is None:
                        height, width = shown.shape[:2]
                        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
                        if not writer.isOpened():
                            raise OSError(f"OpenCV cannot write MJPG video under {output}")
                    writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                    rows.append({"source": video_path.name, "frame": frame, **{k2: f"{v:.1f}" for k2, v in
                                 zip(("x1", "y1", "x2", "y2"), box)}, "name": person.name, "enrolled": int(not stranger),
                                 "track": turn})  # fmt: skip
                    frame += 1
        writer.release()
        partial.replace(video_path)
    finally:
        if writer is not None:
            writer.release()
        if partial.exists():
            partial.unlink()
    io.write_csv(output / "video_truth.csv", VIDEO_TRUTH_FIELDS, rows)
    summary = {"frames": frame, "tracks": subjects, "stranger_tracks": int(sum(kinds)), "face_frames": len(rows),
               "enrolled_face_frames": sum(r["enrolled"] for r in rows),
               "stranger_face_frames": sum(1 - r["enrolled"] for r in rows),
               "enrolled_people": len(enrolled), "enrolment_photos": len(enrolled) * enrol_per_person, "fps": fps,
               "seed": seed, "orl": str(orl)}  # fmt: skip
    io.write_json(output / "summary.json", summary)
    return summary
