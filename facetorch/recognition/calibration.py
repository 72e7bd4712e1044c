"""Open-set calibration in O(N k): each enrolled image plays a stranger against its nearest other people.

The definition is :meth:`facetorch.recognition.gallery.Gallery.calibrate_open_set`'s: every
image of a person is matched against the rows of everyone else, as a stranger's would be, and
the threshold lets through ``open_set_fpir`` of these best matches; two names whose images match
as closely as the same image (:data:`~facetorch.recognition.gallery.SAME_IMAGE`) are twins, left
out of each other's scores, and named in a warning. Instead of the N x N similarity matrix, each
row asks the vector index for its ``k`` nearest rows: the first one of another (non-twin) person
is its stranger score. A row whose ``k`` rows are all its own person's or twins' asks again with
``4 k``. The few scores at the top of each row are recomputed in float64, as the exact
computation does, so on an exact (flat) index the threshold is the same.

On an exact (flat) index every row plays a stranger. On a graph index (above 65,536 rows) a
uniform sample of :data:`CALIBRATION_ROWS` rows does (each still searched against every row): the
threshold is a quantile of the stranger scores, and a sample of 16,384 estimates the 5% quantile
within a standard error of 0.17 points of FPIR, at a cost that no longer grows with the gallery
(docs/database.md measures both).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from facetorch import evaluation
from facetorch.recognition.gallery import SAME_IMAGE
from facetorch.recognition.vector_index import VectorIndex

__all__ = ["open_set_threshold", "stranger_scores"]

NEIGHBOURS = 8  # rows asked per row at first
NEAR_TIE = 1e-5  # float32 scores this close to a row's best are compared again in float64
CHUNK = 16384
MAX_WIDTH = 1024  # a graph index is asked for at most this many rows a row
CALIBRATION_ROWS = 16_384  # rows that play strangers in a graph index: a uniform sample


def _rescore(index: VectorIndex, queries: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 scores of the (row, neighbour) pairs in ``mask`` (NaN elsewhere)."""
    out = np.full(ids.shape, np.nan)
    rows, cols = np.nonzero(mask)
    if len(rows):
        neighbours = index.vectors(ids[rows, cols]).astype(np.float64)
        out[rows, cols] = np.einsum("ij,ij->i", queries[rows].astype(np.float64), neighbours)
    return out


def _row_scores(index: VectorIndex, queries: np.ndarray, own: np.ndarray, twins: dict[int, set[int]], k: int,
                ef: Optional[int]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, float]]]:  # fmt: skip
    """(stranger score or NaN, unresolved mask, twin pairs seen) for ``queries`` of persons ``own``.

    Unresolved rows need a larger ``k``: every neighbour was their own or a twin's, near ties ran
    to the end of the list, or the list is all same-image matches (more twins may lie beyond).
    """
    scores, ids = index.search(queries, k, ef)
    people = np.where(ids >= 0, index.person_of[np.maximum(ids, 0)], 0)
    other = (people != own[:, None]) & (people != 0)
    close = other & (scores >= SAME_IMAGE - 1e-5)
    pairs: list[tuple[int, int, float]] = []
    if close.any():
        exact = _rescore(index, queries, ids, close)
        for r, c in zip(*np.nonzero(close & (exact >= SAME_IMAGE))):
            pairs.append((int(own[r]), int(people[r, c]), float(exact[r, c])))
    for a, b, _ in pairs:
        twins.setdefault(a, set()).add(b)
        twins.setdefault(b, set()).add(a)
    eligible = other.copy()
    for r in np.flatnonzero(np.isin(own, list(twins))):
        eligible[r] &= ~np.isin(people[r], list(twins[int(own[r])]))
    found = eligible.any(axis=1)
    best = np.where(eligible, scores, -np.inf).max(axis=1)
    near = eligible & (scores >= best[:, None] - NEAR_TIE)
    exact = _rescore(index, queries, ids, near)
    result = np.where(found, np.nanmax(np.where(near, exact, -np.inf), axis=1), np.nan)
    # Asked as far as it goes: every row, all the graph walk found (fewer than k came back), or the widest ask.
    full = (k >= len(index)) | (ids[:, -1] < 0) | (not index.exact and k >= MAX_WIDTH)
    unresolved = ~full & (~found | near[:, -1] | (scores[:, -1] >= SAME_IMAGE - 1e-5))
    return result, unresolved, pairs


def stranger_scores(index: VectorIndex, k: int = NEIGHBOURS, ef: Optional[int] = None,
                    rows: int = CALIBRATION_ROWS, seed: int = 0) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Stranger scores (NaN: no other non-twin person) and the twin pairs {(a, b): score}, by person id.

    Every row's when the index is exact or holds at most ``rows``, else those of ``rows`` rows drawn at random.
    ``ef``: HNSW candidates (default: the index's calibration setting).
    """
    ef = ef or index.efs()[1]
    twins: dict[int, set[int]] = {}
    pairs: dict[tuple[int, int], float] = {}
    parts, pending = [], []
    for chunk, queries in _players(index, rows, seed):
        own = index.person_of[chunk]
        scores, unresolved, seen = _row_scores(index, queries, own, twins, k, ef)
        _keep_pairs(pairs, seen)
        parts.append(scores)
        pending.append((chunk, own, unresolved))  # the vectors are read again for the few rows asked again
    # Twins found late make earlier rows of those people wrong: ask again for them, and for the unresolved.
    for part, (chunk, own, unresolved) in enumerate(pending):
        again = unresolved | np.isin(own, list(twins))
        width = k
        while again.any():
            width = min(4 * width, len(index))
            redo = np.flatnonzero(again)
            scores, unresolved, seen = _row_scores(index, index.vectors(chunk[redo]), own[redo], twins, width, ef)
            _keep_pairs(pairs, seen)
            parts[part][redo] = scores
            again[redo] = unresolved
    return (np.concatenate(parts) if parts else np.empty(0)), pairs


def _players(index: VectorIndex, rows: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of the rows that play strangers, ``CHUNK`` at a time: all of them, or a sample."""
    if index.exact or len(index) <= rows:
        yield from index.iter_rows(CHUNK)
        return
    ids = np.concatenate([part for part, _ in index.iter_ids()])
    pick = np.sort(np.random.default_rng(seed).choice(ids, size=rows, replace=False))
    for start in range(0, rows, CHUNK):
        chunk = pick[start : start + CHUNK]
        yield chunk, index.vectors(chunk)


def _keep_pairs(pairs: dict[tuple[int, int], float], seen: list[tuple[int, int, float]]) -> None:
    for a, b, score in seen:
        key = (min(a, b), max(a, b))
        pairs[key] = max(pairs.get(key, 0.0), score)


def open_set_threshold(index: VectorIndex, fpir: float, people: int, pair_threshold: float,
                       names: Any = None) -> float:  # fmt: skip
    """The open-set threshold at ``fpir`` over ``index`` (NaN with a warning under 3 people).

    ``names(person_ids) -> {id: name}`` names twins in the warning.
    """
    if people < 3:
        warnings.warn(
            f"The gallery holds {people} person{'' if people == 1 else 's'}: no open-set threshold can be calibrated "
            f"(it needs 3 people or more); identify uses the model's pair threshold {pair_threshold:.4g} unless "
            "--threshold is given",
            stacklevel=3,
        )
        return float("nan")
    scores, pairs = stranger_scores(index)
    named = names(np.array(sorted({p for pair in pairs for p in pair}))) if (names and pairs) else {}
    for first, second, score in sorted((*sorted((named.get(a, str(a)), named.get(b, str(b)))), score)
                                       for (a, b), score in pairs.items()):  # fmt: skip
        warnings.warn(
            f"{first} and {second} match each other at {score:.4f}, as the same image would: the same person "
            "under two names? They are left out of each other's calibration; enrol them under one name",
            stacklevel=3,
        )
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return float("nan")
    return min(1.0, evaluation.fpir_threshold(scores, fpir))
