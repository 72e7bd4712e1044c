"""A track's name from all its faces so far, with hysteresis, so one bad frame does not flip it.

:class:`NameEvidence` keeps the quality-weighted mean of a track's unit embeddings. After each
new embedding the caller matches it (one batch for all tracks) and gives the answer to
:meth:`NameEvidence.decide`. Which vector asks, and at which threshold, is
:mod:`~facetorch.recognition.track_threshold`'s rule: the unit-length :attr:`NameEvidence.mean`
at a threshold calibrated for means, or :attr:`NameEvidence.average` (the mean left at its own
length, whose cosine with an enrolled image is the quality-weighted mean of the frames' scores) at
the single-photo threshold.

- the first answer names the track only when it clears the threshold by ``sure`` (else the
  track starts ``unknown`` and waits for more evidence);
- later, a different answer (another person, or ``unknown``) replaces the name only when it
  comes ``confirm`` times in a row; an ``unknown`` track becomes a person this way as the evidence
  grows, and :attr:`NameEvidence.named_from` keeps the frame from which it has its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from facetorch.recognition.gallery import UNKNOWN

__all__ = ["NameEvidence"]

QUALITY_FLOOR = 0.05  # a poor frame still counts a little: a track seen only poorly still gets a name


@dataclass
class NameEvidence:
    """The name of one track (see the module docstring).

    Args:
        threshold: The matcher's threshold (scores are compared to it for ``sure``).
        confirm: Answers in a row needed to change a name.
        sure: Margin above the threshold that names a track from its first answer.
    """

    threshold: float
    confirm: int = 2
    sure: float = 0.02
    name: str = UNKNOWN
    score: float = 0.0
    named_from: Optional[int] = None
    embeddings: int = 0
    changes: list[tuple[int, str]] = field(default_factory=list)
    _total: Optional[np.ndarray] = field(default=None, repr=False)
    _weight: float = 0.0
    _pending: Optional[str] = None
    _count: int = 0
    _decided: bool = False

    def add(self, embedding: np.ndarray, quality: float) -> None:
        """Add one face of the track, weighted by its quality."""
        unit = np.asarray(embedding, dtype=np.float64) / max(float(np.linalg.norm(embedding)), 1e-12)
        weighted = (max(quality, 0.0) + QUALITY_FLOOR) * unit
        self._total = weighted if self._total is None else self._total + weighted
        self._weight += max(quality, 0.0) + QUALITY_FLOOR
        self.embeddings += 1

    @property
    def deciding(self) -> bool:
        """Another answer than the name came last: more evidence is wanted."""
        return self._pending is not None

    @property
    def mean(self) -> np.ndarray:
        """The unit-length weighted mean embedding (what the track looks like)."""
        if self._total is None:
            raise ValueError("no embedding added yet")
        return (self._total / max(float(np.linalg.norm(self._total)), 1e-12)).astype(np.float32)

    @property
    def average(self) -> np.ndarray:
        """The weighted mean of the unit embeddings at its own length (<= 1): its cosine scores average the frames'."""
        if self._total is None:
            raise ValueError("no embedding added yet")
        return (self._total / self._weight).astype(np.float32)

    def decide(self, candidate: str, score: float, frame: int) -> str:
        """Take the matcher's answer for :attr:`mean` at ``frame``; returns the name the track has now."""
        if not self._decided:
            self._decided = True
            if candidate != UNKNOWN and score >= self.threshold + self.sure:
                self._rename(candidate, frame)
            elif candidate != UNKNOWN:
                self._pending, self._count = candidate, 1
            self.score = score
            return self.name
        if candidate == self.name:
            self._pending, self._count = None, 0
        else:
            self._count = self._count + 1 if candidate == self._pending else 1
            self._pending = candidate
            if self._count >= self.confirm:
                self._rename(candidate, frame)
        self.score = score
        return self.name

    def _rename(self, name: str, frame: int) -> None:
        self.name = name
        self.named_from = frame if name != UNKNOWN else None
        self.changes.append((frame, name))
        self._pending, self._count = None, 0
