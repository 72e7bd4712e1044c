"""``recognitions.csv``: the rows recognition writes, the reader, and the score against a truth file.

One row per face: ``source, frame, x1, y1, x2, y2, name, score`` (pixels of the source; ``unknown``
for a rejected face); a tracked video adds ``track`` (an integer id) and ``quality`` (of the face in
that frame, 0 to 1). The writer and the reader live together so the two never drift.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from facetorch.evaluation import recognition_metrics
from facetorch.evaluation.tracking import track_metrics

__all__ = ["CSV_FIELDS", "CSV_NAME", "TRACKED_FIELDS", "face_rows", "read_rows", "score_recognitions"]

CSV_NAME = "recognitions.csv"
CSV_FIELDS = ["source", "frame", "x1", "y1", "x2", "y2", "name", "score"]
TRACKED_FIELDS = [*CSV_FIELDS, "track", "quality"]
_NEEDED = {"source", "frame", "x1", "y1", "x2", "y2", "name"}


class _NamedFace(Protocol):
    box: tuple[float, float, float, float]
    name: str
    score: float


def face_rows(source: str, frame: int, faces: Sequence[_NamedFace]) -> Iterator[dict[str, Any]]:
    """The CSV rows of one frame's faces (with ``track`` and ``quality`` for faces that have them)."""
    for face in faces:
        x1, y1, x2, y2 = (f"{v:.1f}" for v in face.box)
        row = {"source": source, "frame": frame, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "name": face.name,
               "score": f"{face.score:.4f}"}  # fmt: skip
        if getattr(face, "track", None) is not None:
            row |= {"track": face.track, "quality": f"{face.quality:.3f}"}  # type: ignore[attr-defined]
        yield row


def read_rows(path: str | Path, flag: str) -> list[dict[str, str]]:
    """The rows of a ``recognitions.csv`` (or a composed set's ``truth.csv``); ``flag`` names the option in errors.

    Raises:
        FileNotFoundError: no such file. ValueError: the columns of a recognition CSV are missing.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows, columns = list(reader), list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{flag} {str(path)!r} is not a CSV file ({' '.join(str(error).split())[:120]})") from error
    if rows and not _NEEDED <= set(columns):
        raise ValueError(f"{flag} {str(path)!r}: expected the columns {sorted(_NEEDED)}, found {columns[:10]}")
    if any(None in row for row in rows):  # csv.DictReader keeps a row's extra fields under the key None
        raise ValueError(f"{flag} {str(path)!r}: a row has more fields than the header {columns[:10]}")
    return rows


def _box(row: dict[str, str], flag: str) -> list[float]:
    try:
        return [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{flag}: a row without a box x1,y1,x2,y2: {row}") from error


def score_recognitions(truth_path: str | Path, recognitions_path: str | Path, iou: float = 0.4) -> dict[str, Any]:
    """Score a ``recognitions.csv`` against a composed set's ``truth.csv`` (:func:`~facetorch.evaluation.recognition_metrics`).

    Pictures are matched by file name; video frames by their index. A truth with a ``track``
    column (``gallery.py compose --video``) adds :func:`~facetorch.evaluation.tracking.track_metrics`:
    strangers accepted, name changes per 100 face-frames along a true track, ID switches (when
    the recognitions have a ``track`` column), and ``per_track``.
    """
    truth_rows, found_rows = read_rows(truth_path, "--truth"), read_rows(recognitions_path, "--recognitions")
    video = any(row.get("frame", "") != "" for row in truth_rows)

    def key(row: dict[str, str]) -> Any:
        return int(row["frame"]) if video else Path(row["source"]).name

    if not truth_rows:
        raise ValueError(f"--truth {str(truth_path)!r} holds no face: there is nothing to score against")
    truth = [{"key": key(r), "box": _box(r, "--truth"), "name": r["name"], "enrolled": r.get("enrolled") == "1"}
             for r in truth_rows]  # fmt: skip
    found = [{"key": key(r), "box": _box(r, "--recognitions"), "name": r["name"]} for r in found_rows]
    pictures, seen = {row["key"] for row in truth}, {row["key"] for row in found}
    if seen and not seen & pictures:
        what = "frames" if video else "pictures"
        recognised, true = (", ".join(map(str, sorted(keys)[:3])) for keys in (seen, pictures))
        raise ValueError(f"--recognitions {str(recognitions_path)!r} and --truth {str(truth_path)!r} share no {what} "
                         f"(recognised: {recognised}; true: {true}): score the recognitions of the set the truth file "
                         "came with")  # fmt: skip
    report = recognition_metrics(truth, found, iou=iou)
    if video and truth_rows and "track" in truth_rows[0]:
        for row, source in zip(truth, truth_rows):
            row["track"] = source["track"]
        for row, source in zip(found, found_rows):
            row["track"] = source.get("track") or None
        report |= track_metrics(truth, found, iou=iou)
    return report
