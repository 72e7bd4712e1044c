"""A clustering run: a table of faces grouped, and its output folder (clusters.csv, faces.npz, contact sheets, index.html)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.images import ImageReadError, read_image
from facetorch.recognition.clustering.faces import FaceTable
from facetorch.recognition.clustering.graph import average_linkage, chinese_whispers, knn_graph

# ----------------------------------------------------------------------------------------------
# Grouping a table of faces
# ----------------------------------------------------------------------------------------------

METHODS = ("average", "chinese_whispers")


def group_faces(
    embeddings: np.ndarray,
    threshold: float,
    *,
    method: str = "average",
    k: int = 30,
    weights: Optional[np.ndarray] = None,
    initial: Optional[np.ndarray] = None,
    frozen: Optional[np.ndarray] = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw group labels (N,) of faces, and each face's best similarity to another face (from the neighbour graph).

    Args:
        embeddings: (N, D) unit embeddings.
        threshold: The cosine cut (see :func:`cluster_threshold`).
        method: ``average`` (:func:`average_linkage`) or ``chinese_whispers``.
        k: Neighbours per face in the graph.
        weights: Per-face weights of the average (``average`` only).
        initial: A starting partition (``average`` only; -1: on its own).
        frozen: Faces whose starting groups never merge with each other (``average`` only).
        seed: Chinese whispers' random order.
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if k < 1:
        raise ValueError(f"--k must be 1 or more, got {k}")
    neighbours, similarities = knn_graph(embeddings, k)
    nearest = similarities[:, 0] if similarities.shape[1] else np.full(len(embeddings), np.nan, np.float32)
    if method == "chinese_whispers":
        if initial is not None:
            raise ValueError("--update keeps the earlier groups, which only --method average can do")
        return chinese_whispers(neighbours, similarities, threshold, seed=seed), nearest
    return average_linkage(embeddings, neighbours, similarities, threshold, weights=weights, initial=initial,
                           frozen=frozen), nearest  # fmt: skip


def centre_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each face's cosine similarity to the centre (the normalised mean) of its group; NaN for faces without a group."""
    scores = np.full(len(labels), np.nan, dtype=np.float64)
    grouped = np.flatnonzero(labels >= 0)
    if len(grouped) == 0:
        return scores
    values, inverse = np.unique(labels[grouped], return_inverse=True)
    sums = np.zeros((len(values), embeddings.shape[1]))
    np.add.at(sums, inverse, embeddings[grouped].astype(np.float64))
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    scores[grouped] = np.einsum("ij,ij->i", embeddings[grouped].astype(np.float64), centres[inverse])
    return scores


# ----------------------------------------------------------------------------------------------
# The output folder: clusters.csv, faces.npz, contact sheets, index.html
# ----------------------------------------------------------------------------------------------

CSV_NAME = "clusters.csv"
CSV_FIELDS = ["source", "x1", "y1", "x2", "y2", "cluster", "score", "name", "quality"]
FACES_NAME = "faces.npz"
SKIPPED_NAME = "skipped.csv"
LEFT_OUT_NAME = "left_out.csv"
SHEETS = "sheets"
RUN_FORMAT = 1
TILE = 96
COLUMNS = 10


@dataclass
class ClusterRun:
    """What an output folder holds: every face, its group (-1: none), score and name, and how it was made.

    Attributes:
        faces: The faces (with their embeddings).
        labels: (N,) group of each face, -1 for none (alone, or left out for quality).
        scores: (N,) the similarity to the group's centre; for a face alone, to its nearest face;
            for a face named from a gallery, the gallery's score.
        names: (N,) a person's name ("" for none): from a gallery, or given by ``gallery.py name``.
        left_out: (N,) faces below ``--min_quality`` (not clustered).
        meta: The model's fingerprint and source, its dimension, the detector and alignment, the
            threshold, the method and the settings.
    """

    faces: FaceTable
    labels: np.ndarray
    scores: np.ndarray
    names: list[str]
    left_out: np.ndarray
    meta: dict[str, Any]

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """(group, its face rows) for every group, the largest first (ties: the lower number)."""
        values, counts = np.unique(self.labels[self.labels >= 0], return_counts=True)
        order = sorted(zip(values.tolist(), counts.tolist()), key=lambda vc: (-vc[1], vc[0]))
        return [(int(v), np.flatnonzero(self.labels == v)) for v, _ in order]


def _box_text(box: np.ndarray) -> list[str]:
    return [f"{v:.1f}" for v in box]


def csv_rows(run: ClusterRun) -> list[dict[str, Any]]:
    """The rows of ``clusters.csv``: one per face, in the table's order."""
    rows = []
    for i, source in enumerate(run.faces.sources):
        x1, y1, x2, y2 = _box_text(run.faces.boxes[i])
        score = run.scores[i]
        rows.append({"source": source, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "cluster": int(run.labels[i]),
                     "score": f"{score:.4f}" if np.isfinite(score) else "", "name": run.names[i],
                     "quality": f"{run.faces.quality[i]:.3f}"})  # fmt: skip
    return rows


def save_run(output: Path, run: ClusterRun, skipped: dict[str, str], sheet_faces: int = 100,
             progress: bool = True) -> dict[str, str]:  # fmt: skip
    """Write the run into ``output``, each file atomically: faces.npz first, then the CSVs, the sheets, index.html.

    Returns:
        {what: path} of the files written.
    """
    output.mkdir(parents=True, exist_ok=True)
    _write_faces(output, run)
    io.write_csv(output / CSV_NAME, CSV_FIELDS, csv_rows(run))
    io.write_csv(output / SKIPPED_NAME, ["source", "reason"], [{"source": k, "reason": v} for k, v in skipped.items()])
    left = np.flatnonzero(run.left_out)
    io.write_csv(output / LEFT_OUT_NAME, ["source", "x1", "y1", "x2", "y2", "quality"],
                 [dict(zip(["source", "x1", "y1", "x2", "y2", "quality"],
                           [run.faces.sources[i], *_box_text(run.faces.boxes[i]), f"{run.faces.quality[i]:.3f}"]))
                  for i in left])  # fmt: skip
    run.meta["sheet_faces"] = sheet_faces
    sheets = write_sheets(output, run, sheet_faces, progress=progress)
    write_index(output, run, sheets)
    return {"csv": str(output / CSV_NAME), "embeddings": str(output / FACES_NAME), "index": str(output / "index.html")}


def rename_in_run(output: Path, run: ClusterRun, cluster: int) -> None:
    """Write a run whose names changed in one cluster: faces.npz, clusters.csv, that cluster's sheet, index.html."""
    _write_faces(output, run)
    io.write_csv(output / CSV_NAME, CSV_FIELDS, csv_rows(run))
    sheets = write_sheets(output, run, int(run.meta.get("sheet_faces", 100)), only={f"cluster_{cluster:04d}.png"},
                          progress=False)  # fmt: skip
    write_index(output, run, sheets)


def _write_faces(output: Path, run: ClusterRun) -> None:
    from io import BytesIO

    meta = dict(run.meta, format=RUN_FORMAT, sources=run.faces.sources, names=run.names)
    buffer = BytesIO()
    np.savez(buffer, embeddings=run.faces.embeddings.astype(np.float32), boxes=run.faces.boxes.astype(np.float64),
             detection=run.faces.detection.astype(np.float32), quality=run.faces.quality.astype(np.float32),
             labels=run.labels.astype(np.int64), scores=run.scores.astype(np.float64), left_out=run.left_out.astype(bool),
             meta=np.frombuffer(io.json_line(meta).encode("utf-8"), dtype=np.uint8))  # fmt: skip
    with io.atomic_open(output / FACES_NAME, "wb") as handle:
        handle.write(buffer.getvalue())


def load_run(output: str | Path, flag: str = "--clusters") -> ClusterRun:
    """Read the run that ``gallery.py cluster`` wrote into ``output``.

    Raises:
        FileNotFoundError: no run there. ValueError: a damaged or foreign ``faces.npz``.
    """
    import json
    import zipfile

    folder = Path(output)
    path = folder / FACES_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {str(folder)!r} holds no {FACES_NAME}: not a folder written by `gallery.py cluster`")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        sources, names = list(meta.pop("sources")), list(meta.pop("names"))
        faces = FaceTable(sources, arrays["boxes"], arrays["detection"], arrays["quality"], arrays["embeddings"])
        run = ClusterRun(faces, arrays["labels"], arrays["scores"], names, arrays["left_out"], meta)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{flag} {str(folder)!r}: {FACES_NAME} is damaged or was not written by `gallery.py cluster` "
                         f"({reason})") from error  # fmt: skip
    if meta.get("format") != RUN_FORMAT:
        raise ValueError(f"{flag} {str(folder)!r}: {FACES_NAME} has format {meta.get('format')!r}; this facetorch reads "
                         f"format {RUN_FORMAT}")  # fmt: skip
    n = len(sources)
    if not (len(names) == len(run.labels) == len(run.scores) == len(run.left_out) == n == len(faces.embeddings)):
        raise ValueError(f"{flag} {str(folder)!r}: {FACES_NAME} holds arrays of different lengths: it is damaged")
    return run


def face_tile(image: np.ndarray, box: Sequence[float], side: int = TILE, margin: float = 0.15) -> np.ndarray:
    """A square RGB thumbnail of a face: its box grown by ``margin``, squared, clipped to the photo."""
    from facetorch.data.crops import crop_box, expand_box

    x1, y1, x2, y2 = (float(v) for v in box)
    half = max(x2 - x1, y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = image.shape[:2]
    crop = crop_box(image, expand_box((cx - half, cy - half, cx + half, cy + half), margin, width, height))
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def contact_sheet(tiles: Sequence[np.ndarray], title: str, columns: int = COLUMNS, side: int = TILE) -> np.ndarray:
    """Face tiles in a grid under a title bar (ASCII; other letters show as '?'): an RGB picture."""
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, math.ceil(len(tiles) / columns))
    bar = 26
    sheet = np.full((bar + rows * (side + 2) + 2, columns * (side + 2) + 2, 3), 255, dtype=np.uint8)
    sheet[:bar] = (40, 40, 40)
    text = title.encode("ascii", "replace").decode("ascii")
    cv2.putText(sheet, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = bar + 2 + r * (side + 2), 2 + c * (side + 2)
        sheet[top : top + side, left : left + side] = tile
    return sheet


def _missing_tile(side: int = TILE) -> np.ndarray:
    tile = np.full((side, side, 3), 200, dtype=np.uint8)
    cv2.putText(tile, "?", (side // 2 - 8, side // 2 + 8), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (90, 90, 90), 2, cv2.LINE_AA)
    return tile


def _sheet_plan(run: ClusterRun, sheet_faces: int) -> list[tuple[str, str, np.ndarray, int]]:
    """(file name, title, the face rows shown, faces in all) of each sheet: groups largest first, then the faces alone."""
    plan = []
    for label, rows in run.groups():
        name = next((run.names[i] for i in rows if run.names[i]), "")
        typical = np.argsort(-np.nan_to_num(run.scores[rows], nan=-2.0), kind="stable")  # the most typical face first
        shown = rows[typical][:sheet_faces]
        title = f"cluster {label}: {len(rows)} faces" + (f" - {name}" if name else "")
        plan.append((f"cluster_{label:04d}.png", title, shown, len(rows)))
    alone = np.flatnonzero((run.labels < 0) & ~run.left_out)
    if len(alone):
        plan.append(("alone.png", f"alone (cluster -1): {len(alone)} faces", alone[:sheet_faces], len(alone)))
    left = np.flatnonzero(run.left_out)
    if len(left):
        order = left[np.argsort(run.faces.quality[left], kind="stable")]
        plan.append(("left_out.png", f"left out (quality below the minimum): {len(left)} faces", order[:sheet_faces], len(left)))
    return plan


def write_sheets(output: Path, run: ClusterRun, sheet_faces: int = 100, only: Optional[set[str]] = None,
                 progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """One PNG contact sheet per group (largest first), one of the faces alone and one of those left out.

    Each photo is read once; a photo that is gone (an earlier run's) shows as a grey tile. Sheets
    of an earlier run that this one no longer has are removed. ``only``: draw these sheets (file
    names) alone, and list all.

    Returns:
        ``file``, ``title``, ``faces`` of every sheet, in order.
    """
    plan = _sheet_plan(run, sheet_faces)
    drawn = [item for item in plan if only is None or item[0] in only]
    wanted: dict[str, list[int]] = {}
    for _, _, rows, _ in drawn:
        for i in rows.tolist():
            wanted.setdefault(run.faces.sources[i], []).append(i)
    tiles: dict[int, np.ndarray] = {}
    for source, rows in io.progress(wanted.items(), "sheets", total=len(wanted), enabled=progress):
        try:
            image = read_image(source, 3)
        except ImageReadError:
            continue
        for i in rows:
            tiles[i] = face_tile(image, run.faces.boxes[i])
    folder = output / SHEETS
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for file_name, title, rows, total in plan:
        more = f" ({len(rows)} shown)" if total > len(rows) else ""
        if only is None or file_name in only:
            io.write_png(folder / file_name, contact_sheet([tiles.get(i, _missing_tile()) for i in rows.tolist()], title + more))
        listed.append({"file": f"{SHEETS}/{file_name}", "title": title + more, "faces": int(total)})
    if only is None:
        keep = {Path(item["file"]).name for item in listed}
        for old in folder.glob("*.png"):
            if old.name not in keep and (old.name.startswith("cluster_") or old.name in ("alone.png", "left_out.png")):
                old.unlink()
    return listed


def write_index(output: Path, run: ClusterRun, sheets: Sequence[dict[str, Any]]) -> None:
    """``index.html``: every sheet, largest group first, and how to name a group."""
    import html

    grouped, alone = int((run.labels >= 0).sum()), int(((run.labels < 0) & ~run.left_out).sum())
    head = (f"{len(run.faces)} faces in {len(set(run.faces.sources))} photos: {len(run.groups())} clusters "
            f"({grouped} faces), {alone} alone, {int(run.left_out.sum())} left out")  # fmt: skip
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>facetorch clusters</title>',
             "<style>body{font-family:sans-serif;margin:1.5em}img{max-width:100%;border:1px solid #ccc}"
             "section{margin-bottom:1.5em}code{background:#f3f3f3;padding:0 .3em}</style></head><body>",
             f"<h1>{html.escape(head)}</h1>",
             "<p>Name a cluster (its faces join a gallery, or that person's images there): <code>gallery.py name "
             f"--clusters {html.escape(str(output))} --cluster N --name NAME --gallery people.npz</code></p>"]  # fmt: skip
    for sheet in sheets:
        anchor, title = Path(sheet["file"]).stem, html.escape(sheet["title"])
        parts.append(f'<section id="{anchor}"><h2>{title}</h2>'
                     f'<img src="{html.escape(sheet["file"])}" alt="{title}" loading="lazy"></section>')  # fmt: skip
    parts.append("</body></html>")
    io.write_text(output / "index.html", "\n".join(parts) + "\n")
