"""Synthetic face embeddings, clustered as a face network's are, for gallery benchmarks at millions of people.

Real 128-d face embeddings are not spread over the sphere: they sit in a narrow cap around a
shared mean direction (strangers' cosine about 0.84 for dlib's network, the same person's about
0.95), with a few directions that tell people apart much more than the rest. The model here is
fitted to dlib's network on 1,069 LFW photos of 111 people (facetorch's embedding_dlib, Haar
faces, 5-point aligned; only these summary numbers are kept):

- a mean direction with norm 0.915 (the norm of the average embedding);
- each person's centre: the mean plus Gaussian offsets in a random orthonormal basis orthogonal to
  it, with variances 0.0075 exp(-k / 14.2) along the k-th direction (the people's spectrum);
- each image: its person's centre plus Gaussian offsets with variances 0.00142 exp(-k / 34.5)
  (the within-person spectrum), scaled by a log-normal factor per image (some photos stray
  further than others), normalised to unit length.

These give same-person cosines of 0.95 +- 0.02 and strangers' of 0.84 +- 0.04 (1% of strangers
above 0.90), as measured on the photos (0.95 +- 0.02, 0.84 +- 0.03, 0.91).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["FaceVectors"]

MEAN_NORM = 0.915
BETWEEN = (0.0075, 14.2)  # people's variance along direction k: scale * exp(-k / tau)
WITHIN = (0.00142, 34.5)  # an image's variance around its person's centre along direction k
SPREAD = 0.25  # each image's offsets scaled by exp(N(0, SPREAD) - SPREAD^2): the spread of real same-person cosines
BLOCK = 4096  # people drawn together (one generator each block)


class FaceVectors:
    """A population of synthetic people, drawn reproducibly by person number.

    Args:
        dim: Embedding size (128 as dlib's).
        seed: The population (its basis and mean); person ``p``'s centre and images depend on ``p``
            and ``seed`` only, so any part of a million-person gallery can be drawn again.
    """

    def __init__(self, dim: int = 128, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        self.dim, self.seed = dim, seed
        self.mean = basis[:, 0] * MEAN_NORM
        k = np.arange(dim - 1)
        self.between = basis[:, 1:] * np.sqrt(BETWEEN[0] * np.exp(-k / BETWEEN[1]))  # (dim, dim - 1), scaled columns
        self.within = basis[:, 1:] * np.sqrt(WITHIN[0] * np.exp(-k / WITHIN[1]))

    def centres(self, people: np.ndarray) -> np.ndarray:
        """Each person's centre (not normalised), (len(people), dim) float64."""
        people = np.asarray(people, np.int64)
        offsets = np.empty((len(people), self.dim - 1))
        blocks = people // BLOCK
        for block in np.unique(blocks):  # person p's offsets: row p % BLOCK of its block's draw
            drawn = np.random.default_rng([self.seed, 1, int(block)]).normal(size=(BLOCK, self.dim - 1))
            here = blocks == block
            offsets[here] = drawn[people[here] % BLOCK]
        return self.mean + offsets @ self.between.T

    def images(self, people: np.ndarray, per_person: int, shot: int = 0, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """``per_person`` unit embeddings of each person (person-major rows), float32.

        ``shot`` picks another set of photos of the same people (e.g. 0 to enrol, 1 to probe).
        """
        people = np.asarray(people, np.int64)
        centres = np.repeat(self.centres(people), per_person, axis=0)
        rng = rng or np.random.default_rng([self.seed, 2 + shot, int(people[0]) if len(people) else 0, len(people)])
        spread = np.exp(rng.normal(0.0, SPREAD, size=(len(centres), 1)) - SPREAD**2)  # some photos stray further
        rows = centres + spread * (rng.normal(size=(len(centres), self.dim - 1)) @ self.within.T)
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
