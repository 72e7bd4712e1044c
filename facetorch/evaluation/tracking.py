"""Faces over time: the names and the track ids a video's faces get, along each true track.

:func:`track_metrics` matches the faces found in each frame to the true faces of that frame (one
to one, greedily from the highest IoU down, as :func:`~facetorch.evaluation.recognition_metrics`),
then follows each true track through the frames where it was found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facetorch.boxes import box_iou

__all__ = ["match_frames", "track_metrics"]


def match_frames(truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], iou: float = 0.4) -> list[tuple[int, int]]:
    """Pairs (truth index, found index) of the faces matched in each frame (``key``), by IoU of at least ``iou``."""
    by_key: dict[Any, tuple[list[int], list[int]]] = {}
    for i, row in enumerate(truth):
        by_key.setdefault(row["key"], ([], []))[0].append(i)
    for j, row in enumerate(found):
        if row["key"] in by_key:
            by_key[row["key"]][1].append(j)
    pairs: list[tuple[int, int]] = []
    for faces, detections in by_key.values():
        if not faces or not detections:
            continue
        overlap = box_iou([truth[i]["box"] for i in faces], [found[j]["box"] for j in detections])
        used_truth: set[int] = set()
        used_found: set[int] = set()
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            a, b = divmod(int(flat), len(detections))
            if overlap[a, b] < iou:
                break
            if a in used_truth or b in used_found:
                continue
            used_truth.add(a)
            used_found.add(b)
            pairs.append((faces[a], detections[b]))
    return sorted(pairs)


def track_metrics(
    truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], iou: float = 0.4, unknown: str = "unknown"
) -> dict[str, Any]:
    """How steady names and track ids stay along each true track of a video.

    Args:
        truth: Rows with ``key`` (the frame, an int), ``box``, ``name``, ``enrolled`` (bool) and ``track``.
        found: Rows with ``key``, ``box``, ``name`` and ``track`` (``None`` when the recogniser does not track).
        iou: Least IoU of a match.
        unknown: The name of a rejected face.

    Returns:
        ``identification_rate`` (enrolled face-frames named right, of all enrolled face-frames),
        ``stranger_accept_rate`` (stranger face-frames found and given a name, of those found),
        ``name_changes`` (times the name of the face found changes between two consecutive
        frames in which a true track is found) and ``name_changes_per_100`` (per 100 face-frames
        found), ``id_switches`` (times the track id found along a true track changes; ``None``
        without track ids), ``true_tracks``, ``tracks_found`` (distinct ids), ``face_frames``
        and ``face_frames_found``; and per true track its ``named_from`` (the first frame from
        which it keeps its right name, enrolled people only; ``None`` if it never settles).
    """
    pairs = match_frames(truth, found, iou)
    along: dict[Any, list[tuple[int, int]]] = {}
    for i, j in pairs:
        along.setdefault(truth[i]["track"], []).append((truth[i]["key"], j))
    changes = switches = 0
    tracked = bool(found) and all(row.get("track") is not None for row in found)
    per_track: dict[str, Any] = {}
    for track, seen in along.items():
        seen.sort()
        names = [found[j]["name"] for _, j in seen]
        ids = [found[j].get("track") for _, j in seen]
        changed = sum(a != b for a, b in zip(names, names[1:]))
        changes += changed
        switches += sum(a != b for a, b in zip(ids, ids[1:]))
        person = next(row for row in truth if row["track"] == track)
        settled = None
        if person["enrolled"]:
            wrong = [k for k, name in enumerate(names) if name != person["name"]]
            settled = seen[wrong[-1] + 1][0] if wrong and wrong[-1] + 1 < len(seen) else (seen[0][0] if not wrong else None)
        per_track[str(track)] = {"name": person["name"], "enrolled": bool(person["enrolled"]), "found": len(seen),
                                 "name_changes": changed, "named_from": settled}  # fmt: skip
    enrolled = [i for i, row in enumerate(truth) if row["enrolled"]]
    correct = sum(found[j]["name"] == truth[i]["name"] for i, j in pairs if truth[i]["enrolled"])
    strangers_found = [j for i, j in pairs if not truth[i]["enrolled"]]
    named = sum(found[j]["name"] != unknown for j in strangers_found)

    def rate(part: int, whole: int) -> float:
        return float(part / whole) if whole else float("nan")

    return {
        "identification_rate": rate(correct, len(enrolled)),
        "stranger_accept_rate": rate(named, len(strangers_found)),
        "name_changes": changes,
        "name_changes_per_100": 100.0 * rate(changes, len(pairs)),
        "id_switches": switches if tracked else None,
        "true_tracks": len({row["track"] for row in truth}),
        "tracks_found": len({row["track"] for row in found}) if tracked else None,
        "face_frames": len(truth),
        "face_frames_found": len(pairs),
        "per_track": per_track,
    }
