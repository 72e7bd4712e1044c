"""Which face of an enrolment photo is the person's: the only one, a clearly larger one, or ``--pick``'s choice.

A photo with one face, or with one face at least :data:`DOMINANCE` times the area of every other,
is clear. For the others (a friend beside the person, a crowd behind), ``--pick`` decides:

- ``central`` (the default): the face that is both large and near the middle of the photo,
  scored by area x (1 - d)^2, d the distance from the photo's centre to the face's centre over
  half the photo's diagonal; a portrait is framed on its subject, as LFW's photos are;
- ``largest``: the largest face;
- ``ask``: none; the photo is skipped and reported, as facetorch 0.1 did (nothing is matched either).

With several photos of one person, their clear photos say who the person is: in a photo with
several faces, the face most similar to them (at least the model's pair threshold) is taken,
whatever its place or size, and a photo none of whose faces matches is skipped (not guessed by
position); ``--pick`` decides only where no clear photo of the person exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from facetorch.boxes import box_area

__all__ = ["DOMINANCE", "PICKS", "choose_faces", "pick_face", "subject_face"]

DOMINANCE = 2.0  # a photo's subject is a face at least this many times larger than every other face in it
PICKS = ("central", "largest", "ask")


def subject_face(boxes: np.ndarray) -> tuple[Optional[int], str]:
    """The only face, or one at least twice the area of every other; else ``(None, reason)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return None, "no face found"
    if len(boxes) == 1:
        return 0, ""
    areas = box_area(boxes)
    order = np.argsort(-areas, kind="stable")
    if areas[order[0]] >= DOMINANCE * areas[order[1]]:
        return int(order[0]), ""
    return None, f"{len(boxes)} faces and none clearly the largest: cannot tell which is the person"


def pick_face(boxes: np.ndarray, size: tuple[int, int], pick: str) -> Optional[int]:
    """``--pick``'s face among ``boxes`` of a ``size`` (height, width) photo; None for ``ask``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if pick not in PICKS:
        raise ValueError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    if pick == "ask" or not len(boxes):
        return None
    areas = box_area(boxes)
    if pick == "largest":
        return int(np.argmax(areas))
    height, width = size
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2) / (np.hypot(width, height) / 2)
    return int(np.argmax(areas * np.clip(1.0 - distance, 0.0, 1.0) ** 2))


def choose_faces(
    found: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    embed: Callable[[int, np.ndarray], np.ndarray],
    pick: str = "central",
    match_threshold: float = float("nan"),
) -> tuple[list[Optional[int]], list[str]]:
    """The person's face in each of their photos, and a note for each (why none, or how one was chosen).

    Args:
        found: Each photo's face boxes (N, 4).
        sizes: Each photo's (height, width).
        embed: ``embed(photo number, boxes)`` -> unit embeddings of those faces.
        pick: ``central``, ``largest`` or ``ask`` for photos with several faces and nothing to match.
        match_threshold: Least cosine similarity to the person's clear photos for a face to be theirs
            (NaN: matching is not used).

    Returns:
        The face index per photo (None: skipped) and a note per photo ("" for a clear photo).
    """
    if pick not in PICKS:
        raise ValueError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    chosen: list[Optional[int]] = []
    notes: list[str] = []
    for boxes in found:
        index, reason = subject_face(boxes)
        chosen.append(index)
        notes.append(reason if index is None else "")
    crowded = [k for k, (index, boxes) in enumerate(zip(chosen, found)) if index is None and len(boxes) > 1]
    if not crowded:
        return chosen, notes
    clear = [k for k, index in enumerate(chosen) if index is not None]
    reference = np.concatenate([embed(k, found[k][chosen[k] : chosen[k] + 1]) for k in clear]) if clear else None
    for k in crowded:
        boxes, count = np.asarray(found[k]), len(found[k])
        if pick != "ask" and reference is not None and np.isfinite(match_threshold):
            similarity = (embed(k, boxes) @ reference.T).max(axis=1)
            best = int(np.argmax(similarity))
            if similarity[best] >= match_threshold:
                chosen[k] = best
                notes[k] = (f"face {best + 1} of {count} at {_box(boxes[best])}: it matches the person's other photos "
                            f"({similarity[best]:.3f})")  # fmt: skip
            else:  # the person's other photos are known and none of these faces is theirs: not a guess by position
                notes[k] = (f"{count} faces and none matches the person's other photos (best {similarity[best]:.3f}, below "
                            f"{match_threshold:.3f})")  # fmt: skip
            continue
        index = pick_face(boxes, sizes[k], pick)
        if index is None:
            continue  # --pick ask: the photo stays skipped with subject_face's reason
        chosen[k] = index
        notes[k] = f"face {index + 1} of {count} at {_box(boxes[index])}: the {pick} face (--pick {pick})"
    return chosen, notes


def _box(box: np.ndarray) -> str:
    return "(" + ", ".join(str(int(round(float(v)))) for v in box) + ")"
