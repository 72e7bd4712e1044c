"""Multi-face recognition: every face of a picture found and named, scored against the truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facetorch.boxes import box_iou


def recognition_metrics(
    truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], iou: float = 0.4, unknown: str = "unknown"
) -> dict[str, Any]:
    """Score recognised faces against the faces really there, picture by picture.

    Each picture's detections are matched one to one to its true faces, greedily from the
    highest IoU down, when the IoU is at least ``iou`` (detectors draw faces at different sizes,
    so the bar is below the usual 0.5).

    Args:
        truth: Rows with ``key`` (the picture), ``box`` (x1, y1, x2, y2), ``name`` and ``enrolled`` (bool).
        found: Rows with ``key``, ``box`` and ``name`` (``unknown`` for a rejected face).
        iou: Least IoU of a match.
        unknown: The name of a rejected face.

    Returns:
        ``detection_rate`` (true faces found), ``identification_rate`` (enrolled faces found and
        named right, of all enrolled faces), ``identification_rate_of_found`` (of the enrolled
        faces found), ``stranger_rejection_rate`` (strangers found and answered ``unknown``, of
        the strangers found), ``false_accepts`` (strangers given a name), ``misidentified``
        (enrolled faces given another's name), ``enrolled_rejected`` (enrolled faces answered
        ``unknown``), ``extra_detections`` (detections of no true face) and how many of those got
        a name (``extra_named``), and the counts ``faces``, ``enrolled_faces``, ``stranger_faces``,
        ``detections``, ``pictures``.
    """
    by_key: dict[Any, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for row in truth:
        by_key.setdefault(row["key"], ([], []))[0].append(row)
    extra = extra_named = 0
    for row in found:
        if row["key"] not in by_key:  # a picture without true faces: every detection is extra
            extra += 1
            extra_named += row["name"] != unknown
            continue
        by_key[row["key"]][1].append(row)
    counts = {"found_enrolled": 0, "found_strangers": 0, "correct": 0, "rejected_strangers": 0, "misidentified": 0,
              "enrolled_rejected": 0, "false_accepts": 0, "found": 0}  # fmt: skip
    for faces, detections in by_key.values():
        matched_truth: set[int] = set()
        matched_found: set[int] = set()
        if faces and detections:
            overlap = box_iou([d["box"] for d in detections], [f["box"] for f in faces])
            for flat in np.argsort(-overlap, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(faces))
                if overlap[i, j] < iou:
                    break
                if i in matched_found or j in matched_truth:
                    continue
                matched_found.add(i)
                matched_truth.add(j)
                face, name = faces[j], detections[i]["name"]
                counts["found"] += 1
                if face["enrolled"]:
                    counts["found_enrolled"] += 1
                    counts["correct"] += name == face["name"]
                    counts["enrolled_rejected"] += name == unknown
                    counts["misidentified"] += name not in (unknown, face["name"])
                else:
                    counts["found_strangers"] += 1
                    counts["rejected_strangers"] += name == unknown
                    counts["false_accepts"] += name != unknown
        for i, detection in enumerate(detections):
            if i not in matched_found:
                extra += 1
                extra_named += detection["name"] != unknown
    enrolled_faces = sum(bool(row["enrolled"]) for row in truth)
    stranger_faces = len(truth) - enrolled_faces

    def rate(part: int, whole: int) -> float:
        return float(part / whole) if whole else float("nan")

    return {
        "detection_rate": rate(counts["found"], len(truth)),
        "identification_rate": rate(counts["correct"], enrolled_faces),
        "identification_rate_of_found": rate(counts["correct"], counts["found_enrolled"]),
        "stranger_rejection_rate": rate(counts["rejected_strangers"], counts["found_strangers"]),
        "false_accepts": counts["false_accepts"],
        "misidentified": counts["misidentified"],
        "enrolled_rejected": counts["enrolled_rejected"],
        "extra_detections": extra,
        "extra_named": extra_named,
        "faces": len(truth),
        "enrolled_faces": enrolled_faces,
        "stranger_faces": stranger_faces,
        "detections": len(found),
        "pictures": len({row["key"] for row in truth} | {row["key"] for row in found}),
    }
