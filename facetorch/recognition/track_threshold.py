"""How a track's evidence is matched: which vector asks the gallery, and at which threshold.

A gallery's open-set threshold is calibrated with single images playing strangers. A track's
unit-length mean embedding scores higher than its single faces (averaging cancels the noise of
each photo), strangers' means included: matched at the single-image threshold, a composed video's
strangers were named in 0.70 of their frames where single frames were in 0.24 (docs/video.md).
Two rules keep the gallery's false-accept rate:

- **mean** (the default where it can be calibrated): the unit mean is matched at a threshold
  calibrated the same way as the gallery's, with the unit mean of **two** enrolled images of one
  person playing the stranger against everyone else's images (:func:`mean_threshold`). A track
  seen in one embedding is a single face, matched at the gallery's own threshold.
- **average**: the weighted mean of the unit embeddings left at its own length; its cosine with an
  enrolled image is the mean of the frames' cosines, on the single-image scale, so the gallery's
  threshold applies as it is. Used where the mean threshold cannot be calibrated (fewer than 3
  people with 2 images, a gallery over :data:`MAX_ROWS` rows) and where ``--threshold`` was given
  (a threshold chosen for single faces).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from facetorch import evaluation
from facetorch.recognition.evidence import NameEvidence
from facetorch.recognition.gallery import SAME_IMAGE

__all__ = ["MAX_ROWS", "TrackRule", "mean_threshold", "same_person_floor", "track_rule"]

MAX_ROWS = 200_000  # above this the exact calibration (pairs x rows products) costs seconds: the average rule instead
MAX_PAIRS = 3  # pairs of images taken per person (a person with 3 images has 3)
MAX_PLAYERS = 4_000  # pairs that play strangers at most (a uniform sample above)
SAME_PERSON_QUANTILE = 0.01  # of a person's photos against their other photos: below it, a face is someone else


def mean_threshold(names: Sequence[str], rows: np.ndarray, fpir: float, seed: int = 0) -> Optional[float]:
    """The open-set threshold for unit mean embeddings of two faces, or None where it cannot be calibrated.

    Each person with two or more images plays a stranger with the unit mean of a pair of their
    images (up to :data:`MAX_PAIRS` pairs), matched against every other person's rows (rows that
    match one of the pair as the same image would are twins, left out); the threshold lets through
    ``fpir`` of these best matches, as the gallery's own calibration does for single images.

    Args:
        names: The person of each row.
        rows: The enrolled embeddings (N, D), unit length.
        fpir: The false-positive identification rate allowed (the gallery's ``open_set_fpir``).
        seed: Seed of the sample where more than :data:`MAX_PLAYERS` pairs could play.

    Returns:
        The threshold, or None with fewer than 3 people of two images or more, or over :data:`MAX_ROWS` rows.
    """
    if len(names) > MAX_ROWS:
        return None
    vectors = np.asarray(rows, dtype=np.float64)
    codes, groups = _people(names)
    pairs = [pair for own in groups for pair in itertools.islice(itertools.combinations(own.tolist(), 2), MAX_PAIRS)]
    players = {codes[a] for a, _ in pairs}
    if len(players) < 3:
        return None
    if len(pairs) > MAX_PLAYERS:
        chosen = np.random.default_rng(seed).choice(len(pairs), MAX_PLAYERS, replace=False)
        pairs = [pairs[i] for i in np.sort(chosen)]
    first, second = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    means = vectors[first] + vectors[second]
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)  # (pairs, D)
    scores = []
    for start in range(0, len(pairs), 512):
        part = slice(start, start + 512)
        similarity = means[part] @ vectors.T  # (pairs, rows)
        twin = np.maximum(vectors[first[part]] @ vectors.T, vectors[second[part]] @ vectors.T) >= SAME_IMAGE
        own = codes[None, :] == codes[first[part], None]
        similarity[own | twin] = -np.inf
        scores.extend(similarity.max(axis=1).tolist())
    scores = [s for s in scores if np.isfinite(s)]
    return min(1.0, evaluation.fpir_threshold(scores, fpir)) if scores else None


def same_person_floor(names: Sequence[str], rows: np.ndarray, quantile: float = SAME_PERSON_QUANTILE) -> Optional[float]:
    """How far below its own person a face may fall: a quantile of each photo's cosine with its person's other photos.

    The cosine is with the unit mean of the person's other photos; the ``quantile`` (1%) of these is the floor.

    A track's new face less similar than this to the track's mean is taken for someone else (the
    track is split). Calibrated on the gallery because the network's same-person similarities are
    much alike from one gallery to another (1st percentile 0.917 to 0.952 on four composed sets)
    where its open-set thresholds are not (0.918 to 0.958: they follow who else is enrolled).
    None with fewer than 3 people of two photos or more, or over :data:`MAX_ROWS` rows.
    """
    if len(names) > MAX_ROWS:
        return None
    vectors = np.asarray(rows, dtype=np.float64)
    codes, _ = _people(names)
    counts = np.bincount(codes)
    if int((counts >= 2).sum()) < 3:
        return None
    totals = np.zeros((len(counts), vectors.shape[1]))
    np.add.at(totals, codes, vectors)  # each person's sum of photos
    keep = counts[codes] >= 2
    rest = totals[codes[keep]] - vectors[keep]  # (rows, D): the person's other photos, summed
    scores = np.einsum("ij,ij->i", vectors[keep], rest) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    return float(np.quantile(scores, quantile))


def _people(names: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each row's person as an integer, and each person's rows (ascending), people in the order they first appear.

    Grouped once by sorting: comparing every name with every row was quadratic (2.5 minutes at 200,000 rows).
    """
    _, first, codes = np.unique(np.asarray(names), return_index=True, return_inverse=True)
    codes = codes.reshape(-1)
    by_person = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    return codes, [by_person[c] for c in np.argsort(first, kind="stable")]


@dataclass(frozen=True)
class TrackRule:
    """Which vector of a track's evidence asks the gallery, and at which threshold (see the module docstring).

    Args:
        rule: ``mean`` (unit mean at ``threshold``), ``average`` (the frames' mean score at ``threshold``)
            or ``classifier`` (unit mean through the matcher, e.g. the SVM's probabilities).
        threshold: The threshold a track's score is compared with (a single face: ``single``).
        single: The gallery's (or the matcher's) threshold for one face.
        same_person: :func:`same_person_floor` of the gallery (None: not calibrated).
    """

    rule: str
    threshold: float
    single: float
    same_person: Optional[float] = None

    def match(self, matcher: Any, tracks: Sequence[NameEvidence]) -> list[tuple[str, float]]:
        """The (name, score) of each track's evidence."""
        if self.rule == "average":
            return matcher(np.stack([t.average for t in tracks]))
        if self.rule == "classifier":
            return matcher(np.stack([t.mean for t in tracks]))
        answers: list[Optional[tuple[str, float]]] = [None] * len(tracks)
        for single in (True, False):  # a track of one face is that face: the gallery's own threshold
            which = [k for k, t in enumerate(tracks) if (t.embeddings < 2) == single]
            if which:
                found = matcher.gallery.identify(np.stack([tracks[k].mean for k in which]),
                                                 self.single if single else self.threshold)  # fmt: skip
                for k, answer in zip(which, found):
                    answers[k] = answer
        return answers  # type: ignore[return-value]

    def threshold_for(self, evidence: NameEvidence) -> float:
        """The threshold this track's score is compared with now."""
        return self.single if self.rule == "mean" and evidence.embeddings < 2 else self.threshold


def track_rule(matcher: Any) -> TrackRule:
    """The rule for ``matcher`` (an open-set or SVM matcher; its ``given`` is true where ``--threshold`` chose it)."""
    single = float(matcher.threshold)
    if getattr(matcher, "kind", "") != "open_set":
        return TrackRule("classifier", single, single)
    gallery = matcher.gallery
    fpir = getattr(gallery.meta, "open_set_fpir", None)
    calibrated = np.isfinite(getattr(gallery.meta, "open_set_threshold", float("nan")))
    if getattr(matcher, "given", False) or not calibrated or fpir is None or len(gallery) > MAX_ROWS:
        return TrackRule("average", single, single)
    names, rows = gallery.rows()
    threshold, floor = mean_threshold(names, rows, float(fpir)), same_person_floor(names, rows)
    if threshold is None:
        return TrackRule("average", single, single, floor)
    return TrackRule("mean", max(threshold, single), single, floor)
