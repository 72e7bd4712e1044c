"""Who is in my photos? Group the faces of a photo collection by person, without knowing how many people there are.

The library side of ``gallery.py cluster`` and ``gallery.py name``:

1. :func:`find_faces`: every face of every photo is found (a face detector of
   :mod:`facetorch.recognition.detectors`), aligned (5 points, for models trained aligned),
   scored for quality (:func:`face_quality`: size, sharpness, pose from the 5 points) and embedded,
   the chips of many photos in one batch;
2. :func:`knn_graph`: each face's ``k`` most similar faces (FAISS, exact inner product on unit
   vectors; HNSW beyond :data:`EXACT_LIMIT` faces), so the graph costs O(N k) memory, never O(N^2);
3. :func:`average_linkage`: agglomerative clustering with average linkage on that graph, cut at a
   cosine threshold. With unit-length embeddings the average similarity of two groups is the dot
   product of their sums divided by their sizes, so it is exact (not an estimate from the graph's
   edges); the graph only says which groups may meet. The threshold is derived from the model's
   calibrated pair threshold (:func:`cluster_threshold`). The other candidates measured against
   it live here too (:func:`chinese_whispers`, :func:`rank_order`, :func:`sklearn_agglomerative`,
   :func:`hdbscan_labels`); ``docs/clustering.md`` has the table that chose it.

Faces that join no group get the label ``-1`` (:data:`NO_CLUSTER`); groups are numbered from 0, the
largest first. :func:`make_cluster_set` writes a test collection (photos of a folder of people
under shuffled names, and the truth); ``facetorch.bench.clustering`` scores a run against it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch import io
from facetorch.data.files import is_image_file, list_images
from facetorch.data.images import ImageReadError, read_image

__all__ = [
    "EXACT_LIMIT",
    "NO_CLUSTER",
    "TRUTH_FIELDS",
    "FaceTable",
    "average_linkage",
    "chinese_whispers",
    "cluster_threshold",
    "collection_files",
    "components",
    "face_quality",
    "find_faces",
    "hdbscan_labels",
    "knn_graph",
    "make_cluster_set",
    "number_by_size",
    "rank_order",
    "sklearn_agglomerative",
]

NO_CLUSTER = -1
EXACT_LIMIT = 200_000  # faces up to which the kNN graph is exact (FAISS IndexFlatIP); HNSW beyond
TRUTH_NAME = "truth.csv"
TRUTH_FIELDS = ["source", "x1", "y1", "x2", "y2", "person"]
LFW_FACE_FRACTIONS = (68 / 250, 68 / 250, 182 / 250, 182 / 250)  # where a deep-funneled LFW photo holds its face

# The cosine pair threshold of models that never validated in facetorch (a config's pretrained network), by
# (fingerprint, flip): the best-accuracy threshold of `tools/evaluate.py --config configs/embedding_dlib.yaml --pairs
# lfw_pairs_dev/pairs.txt [--model.init_args.flip_test=true]` (pair_acc 0.985 / 0.9875), what a checkpoint carries
# after validation.
KNOWN_PAIR_THRESHOLDS = {("dc56d41fa0c9dc7a", False): 0.9133, ("dc56d41fa0c9dc7a", True): 0.9174}
# Clustering asks more than a pair decision: a group's average similarity, among hundreds of people, so the cut sits
# above the pair threshold, by this much (measured on lfw_devtrain + lfw_pairs_dev; see docs/clustering.md).
THRESHOLD_OFFSET = 0.02


# ----------------------------------------------------------------------------------------------
# The threshold
# ----------------------------------------------------------------------------------------------


def cluster_threshold(pair_threshold: float, fingerprint: str = "", flip: bool = True, offset: float = THRESHOLD_OFFSET) -> float:
    """The cosine similarity at which average linkage stops merging, from the model's calibrated pair threshold.

    Args:
        pair_threshold: The model's pair threshold (a checkpoint's, calibrated at validation; NaN if none).
        fingerprint: The model's fingerprint: a pretrained network without a calibrated threshold is
            looked up in :data:`KNOWN_PAIR_THRESHOLDS`.
        flip: Whether faces are embedded with their mirror images (which threshold to look up).
        offset: Added to the pair threshold.

    Raises:
        ValueError: no calibrated threshold is known for this model.
    """
    if not math.isfinite(pair_threshold):
        pair_threshold = KNOWN_PAIR_THRESHOLDS.get((fingerprint, flip), float("nan"))
    if not math.isfinite(pair_threshold):
        raise ValueError(f"the model (fingerprint {fingerprint or '?'}) has no calibrated pair threshold (it never validated): "
                         "pass --threshold T (a cosine similarity), or use a checkpoint trained by tools/train.py")  # fmt: skip
    return float(pair_threshold + offset)


# ----------------------------------------------------------------------------------------------
# The neighbour graph
# ----------------------------------------------------------------------------------------------


def _unit(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:  # pragma: no cover - faiss-cpu is a dependency
        raise ModuleNotFoundError("clustering needs FAISS: pip install faiss-cpu") from error
    import torch

    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))  # FAISS and torch would otherwise fight over the cores
    return faiss


def knn_graph(embeddings: np.ndarray, k: int = 30, exact: Optional[bool] = None) -> tuple[np.ndarray, np.ndarray]:
    """Each face's ``k`` most similar other faces: (N, k) indices (-1 where fewer exist) and (N, k) cosine similarities.

    Args:
        embeddings: (N, D) embeddings (scaled to unit length here).
        k: Neighbours per face.
        exact: Exact search (FAISS ``IndexFlatIP``, O(N^2 D) time, O(N k) memory beyond the embeddings), or
            HNSW (approximate, much faster at scale). Default: exact up to :data:`EXACT_LIMIT` faces.
    """
    x = _unit(embeddings)
    n = len(x)
    k = int(min(k, max(n - 1, 0)))
    if k == 0:
        return np.full((n, 0), -1, dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    faiss = _faiss()
    exact = n <= EXACT_LIMIT if exact is None else exact
    if exact:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * k)
    index.add(x)
    similarities, neighbours = index.search(x, k + 1)
    # drop each face itself (it is usually first, but a duplicate photo may come first instead)
    own = neighbours == np.arange(n)[:, None]
    keep_last = ~own.any(axis=1)  # the face was not returned (HNSW, or duplicates): drop the last instead
    own[keep_last, -1] = True
    neighbours = neighbours[~own].reshape(n, k)
    similarities = similarities[~own].reshape(n, k)
    similarities[neighbours < 0] = -np.inf
    return neighbours.astype(np.int64), similarities.astype(np.float32)


def _edges(neighbours: np.ndarray, similarities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's undirected edges at or above ``threshold``, each once: (a, b, similarity) with a < b."""
    n, k = neighbours.shape
    a = np.repeat(np.arange(n), k)
    b = neighbours.reshape(-1)
    s = similarities.reshape(-1)
    keep = (b >= 0) & (s >= threshold) & (a != b)
    a, b, s = a[keep], b[keep], s[keep]
    low, high = np.minimum(a, b), np.maximum(a, b)
    key = low * n + high
    key, first = np.unique(key, return_index=True)
    return low[first], high[first], s[first]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components (labels 0..) of the graph with ``n`` nodes and edges ``a[i] - b[i]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ----------------------------------------------------------------------------------------------
# The chosen algorithm: average linkage on the neighbour graph, exact averages
# ----------------------------------------------------------------------------------------------


def average_linkage(
    embeddings: np.ndarray,
    neighbours: np.ndarray,
    similarities: np.ndarray,
    threshold: float,
    *,
    weights: Optional[np.ndarray] = None,
    initial: Optional[np.ndarray] = None,
    frozen: Optional[np.ndarray] = None,
    exact: bool = False,
) -> np.ndarray:
    """Agglomerative clustering, average linkage, cut at ``threshold``: group labels (N,), 0.. in no particular order.

    The two groups of highest average cosine similarity merge, again and again, while that average
    is at least ``threshold``. Only groups joined by an edge of the neighbour graph at or above the
    threshold are candidates (a pair of groups whose average reaches it holds such a pair of faces,
    unless the graph's ``k`` was too small to list it). The average itself is exact: for unit
    vectors it is ``sum(A) . sum(B) / (|A| |B|)``. The merges are made in rounds (RAC: all pairs of
    groups that are each other's best neighbour at once, and the groups whose best neighbour a
    merging pair was), vectorised; time O(rounds x E D), memory O(N D + E) for the E edges of the
    graph at or above the threshold.

    Args:
        embeddings: (N, D) embeddings (scaled to unit length here).
        neighbours: (N, k) the graph of :func:`knn_graph`.
        similarities: (N, k) its similarities.
        threshold: The least average cosine similarity of two groups that merge.
        weights: (N,) positive weights (e.g. face quality): a weighted average, so that sharp, frontal
            faces count for more than blurred ones.
        initial: (N,) a partition to start from (-1: a face on its own), e.g. the groups of an earlier run.
        frozen: (N,) bool: faces whose starting groups never merge with each other (they may
            still take in faces that are not frozen).
        exact: Merge only pairs that are each other's best (sequential average linkage exactly,
            on the graph); slower: the rounds grow with the size of the largest group.

    Returns:
        (N,) int64 labels; a face that merged with nobody has a label of its own.
    """
    x = _unit(embeddings).astype(np.float64)
    n = len(x)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != n or (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be {n} positive finite numbers")
    # Groups are named by one of their faces (the first); sums and weights live at that index.
    group = np.arange(n) if initial is None else _start_groups(np.asarray(initial))
    sums = np.zeros_like(x)
    np.add.at(sums, group, x * w[:, None])
    total = np.bincount(group, weights=w, minlength=n).astype(np.float64)
    is_frozen = np.zeros(n, dtype=bool)
    if frozen is not None:
        is_frozen[group[np.asarray(frozen, dtype=bool)]] = True
    a, b, _ = _edges(neighbours, similarities, threshold)
    label = group.copy()
    # Reciprocal agglomerative clustering (RAC; Sumengen et al. 2021): each round, every group finds its best
    # neighbour, and all pairs that are each other's best merge at once. Average linkage is reducible (merging A and W
    # gives avg(A+W, B) <= max(avg(A, B), avg(W, B))), so these are merges sequential average linkage makes too.
    # An edge whose groups' average fell below the threshold can never rise above it again: it is dropped.
    # RAC alone needs as many rounds as the largest group has faces (a big group takes one face a round), so unless
    # `exact`, a merged pair also takes in, in the same round, the faces and groups whose best neighbour it was, one by
    # one, best first, while the growing group's average with each stays at or above the threshold. That is not the
    # order of sequential merging: at a working threshold the two agree (on the development collection within 0.001
    # BCubed F, see docs/clustering.md) and it is 15 times faster on 2 x 10^4 synthetic faces (42 rounds, not 828); far
    # below one, where strangers' averages pass the threshold too, the greedy order grows other groups.
    while len(a):
        low, high = np.minimum(label[a], label[b]), np.maximum(label[a], label[b])
        key = low * n + high
        pairs = np.unique(key[(low != high) & ~(is_frozen[low] & is_frozen[high])])
        low, high = pairs // n, pairs % n
        average = np.einsum("ij,ij->i", sums[low], sums[high]) / (total[low] * total[high])
        alive = average >= threshold
        still = np.isin(key, pairs[alive])
        a, b = a[still], b[still]
        low, high, average = low[alive], high[alive], average[alive]
        if not len(low):
            break
        gone, keep_id = _reciprocal_round(low, high, average, sums, total, is_frozen, threshold, fans=not exact)
        rename = np.arange(n)
        rename[gone] = keep_id
        label = rename[rename[label]]
    return np.unique(label, return_inverse=True)[1].astype(np.int64)


def _reciprocal_round(
    low: np.ndarray, high: np.ndarray, average: np.ndarray, sums: np.ndarray, total: np.ndarray, is_frozen: np.ndarray,
    threshold: float, fans: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One round of :func:`average_linkage` over the pairs of groups (``low`` < ``high``) at or above the threshold.

    Updates ``sums``, ``total`` and ``is_frozen`` of the groups that grow; returns (groups gone, the group each joined).
    ``fans``: also let each merging pair take in the groups whose best neighbour it was.
    """
    # Every group's best neighbour, by one order of all pairs (average descending, then low, high): the first pair
    # overall is its two groups' best, so every round merges at least once.
    order = np.lexsort((high, low, -average))
    node = np.concatenate([low[order], high[order]])
    other = np.concatenate([high[order], low[order]])
    by_node = np.lexsort((np.tile(np.arange(len(order)), 2), node))
    node, other = node[by_node], other[by_node]
    heads = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    n = len(total)
    best = np.full(n, -1, dtype=np.int64)
    best[node[heads]] = other[heads]
    mutual = (best[low] == high) & (best[high] == low)
    x, y = low[mutual], high[mutual]
    swap = (total[x] < total[y]) | ((total[x] == total[y]) & (y < x))  # keep the larger group's name
    keep_id, gone = np.where(swap, y, x), np.where(swap, x, y)
    sums[keep_id] += sums[gone]
    total[keep_id] += total[gone]
    is_frozen[keep_id] |= is_frozen[gone]
    # The fans of a merged pair: groups whose best neighbour was one of the two, in no pair themselves, and nobody's
    # best (so nothing else reaches for them this round). Each joins, best first, while the growing group's average
    # with it stays at or above the threshold.
    if not fans:
        return gone, keep_id
    hub = np.full(n, -1, dtype=np.int64)
    hub[x], hub[y] = keep_id, keep_id
    followers = np.bincount(best[best >= 0], minlength=n)
    groups = node[heads]
    candidate = groups[(hub[best[groups]] >= 0) & (hub[groups] < 0) & (followers[groups] == 0)]
    if not len(candidate):
        return gone, keep_id
    target = hub[best[candidate]]
    first = (np.einsum("ij,ij->i", sums[candidate], sums[target]) / (total[candidate] * total[target]))
    order = np.lexsort((-first, target))
    candidate, target = candidate[order], target[order]
    extra_gone, extra_keep = [], []
    bounds = np.flatnonzero(np.r_[True, target[1:] != target[:-1], True])
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        group = int(target[start])
        running, weight, frozen_now = sums[group].copy(), float(total[group]), bool(is_frozen[group])
        for m in candidate[start:end].tolist():
            if frozen_now and is_frozen[m]:
                continue
            if float(running @ sums[m]) / (weight * total[m]) >= threshold:
                running += sums[m]
                weight += total[m]
                frozen_now = frozen_now or bool(is_frozen[m])
                extra_gone.append(m)
                extra_keep.append(group)
        sums[group], total[group], is_frozen[group] = running, weight, frozen_now
    if extra_gone:
        gone = np.concatenate([gone, np.asarray(extra_gone, dtype=np.int64)])
        keep_id = np.concatenate([keep_id, np.asarray(extra_keep, dtype=np.int64)])
    return gone, keep_id

def _start_groups(initial: np.ndarray) -> np.ndarray:
    """Labels of a starting partition (-1: on its own) -> each face's group named by its group's first face."""
    n = len(initial)
    group = np.arange(n)
    labelled = np.flatnonzero(initial >= 0)
    if len(labelled):
        _, first, inverse = np.unique(initial[labelled], return_index=True, return_inverse=True)
        group[labelled] = labelled[first][inverse]
    return group


# ----------------------------------------------------------------------------------------------
# The other candidates (measured in docs/clustering.md)
# ----------------------------------------------------------------------------------------------


def chinese_whispers(
    neighbours: np.ndarray, similarities: np.ndarray, threshold: float, iterations: int = 100, seed: int = 0,
    weighted: bool = False,
) -> np.ndarray:  # fmt: skip
    """Chinese whispers (Biemann 2006; dlib's ``chinese_whispers_clustering``) on the neighbour graph's edges >= threshold.

    Each face starts in its own group; in random order, again and again, a face takes the label
    that its neighbours and itself (dlib's self-edge) carry with the largest total weight: 1 per
    edge, as dlib (or the similarity, when ``weighted``); ties go to the smaller label, as dlib's.
    """
    n = len(neighbours)
    a, b, s = _edges(neighbours, similarities, threshold)
    weight = s.astype(np.float64) if weighted else np.ones(len(s))
    sources = np.concatenate([a, b])
    order = np.argsort(sources, kind="stable")
    targets = np.concatenate([b, a])[order].tolist()
    edge_weights = np.concatenate([weight, weight])[order].tolist()
    starts = np.searchsorted(sources[order], np.arange(n + 1)).tolist()
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for node in rng.permutation(n).tolist():
            lo, hi = starts[node], starts[node + 1]
            if lo == hi:
                continue
            votes: dict[int, float] = {labels[node]: 1.0}
            for target, value in zip(targets[lo:hi], edge_weights[lo:hi]):
                label = labels[target]
                votes[label] = votes.get(label, 0.0) + value
            best = min(votes, key=lambda label: (-votes[label], label))
            if best != labels[node]:
                labels[node] = best
                changed += 1
        if changed == 0:
            break
    return np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64)


def rank_order(neighbours: np.ndarray, similarities: np.ndarray, threshold: float, rank_threshold: float = 1.6) -> np.ndarray:
    """Approximate rank-order clustering (Otto, Wang and Jain, 2018) on the neighbour graph, with a similarity floor.

    Two faces link when each is in the other's neighbour list with a small rank-order distance
    ``(d(a, b) + d(b, a)) / min(O_a(b), O_b(a))`` (``d(a, b)``: how many of ``a``'s neighbours up to
    ``b`` are missing from ``b``'s list) below ``rank_threshold`` and a similarity at or above
    ``threshold``; groups are the connected components of the links.
    """
    n, k = neighbours.shape
    sets = [set(row[row >= 0].tolist()) for row in neighbours]
    rank = [{int(v): r for r, v in enumerate(row.tolist()) if v >= 0} for row in neighbours]
    links_a, links_b = [], []
    for u in range(n):
        for r, v in enumerate(neighbours[u].tolist()):
            if v < 0 or v <= u and u in rank[v] or similarities[u, r] < threshold:
                continue  # each mutual pair once (from its lower end), and only similar pairs
            ru, rv = r + 1, rank[v].get(u, k) + 1
            d_uv = sum(1 for f in neighbours[u, :ru].tolist() if f not in sets[v] and f != v)
            d_vu = sum(1 for f in neighbours[v, :rv].tolist() if f not in sets[u] and f != u) if u in rank[v] else rv
            if (d_uv + d_vu) / min(ru, rv) < rank_threshold:
                links_a.append(u)
                links_b.append(v)
    return components(n, np.asarray(links_a, dtype=np.int64), np.asarray(links_b, dtype=np.int64))


def sklearn_agglomerative(embeddings: np.ndarray, threshold: float, linkage: str = "average") -> np.ndarray:
    """scikit-learn's agglomerative clustering on the full cosine distance matrix (O(N^2) memory: small N only)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < 2:
        return np.zeros(len(embeddings), dtype=np.int64)
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage=linkage, distance_threshold=1.0 - threshold)
    return model.fit_predict(_unit(embeddings)).astype(np.int64)


def hdbscan_labels(embeddings: np.ndarray, min_cluster_size: int = 2, min_samples: Optional[int] = 1,
                   epsilon: float = 0.0) -> np.ndarray:  # fmt: skip
    """scikit-learn's HDBSCAN on unit vectors (Euclidean, which orders pairs as cosine does); noise is -1."""
    from sklearn.cluster import HDBSCAN

    if len(embeddings) < max(2, min_cluster_size):
        return np.full(len(embeddings), NO_CLUSTER, dtype=np.int64)
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, cluster_selection_epsilon=epsilon,
                    copy=True)  # fmt: skip
    return model.fit_predict(_unit(embeddings).astype(np.float64)).astype(np.int64)


def number_by_size(labels: np.ndarray, min_size: int = 2, start: int = 0) -> np.ndarray:
    """Groups renumbered from ``start``, the largest first (ties: the earliest face's first); under ``min_size`` faces: -1."""
    labels = np.asarray(labels)
    out = np.full(len(labels), NO_CLUSTER, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    values, first, counts = np.unique(labels[valid], return_index=True, return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-counts[i], first[i]))
    mapping, next_id = {}, start
    for i in order:
        if counts[i] >= min_size:
            mapping[int(values[i])] = next_id
            next_id += 1
    out[valid] = [mapping.get(int(v), NO_CLUSTER) for v in labels[valid]]
    return out


# ----------------------------------------------------------------------------------------------
# Faces of a collection: found, aligned, scored for quality, embedded
# ----------------------------------------------------------------------------------------------

SIZE_REFERENCE = 80.0  # a face this many pixels wide (or more) has size quality 1 (dlib_cnn's window is 80 pixels)
SHARPNESS_REFERENCE = 60.0  # the variance of the Laplacian of the face at 64x64 above which it counts as sharp
QUALITY_SIDE = 64  # faces are compared for sharpness at this size


@dataclass
class FaceTable:
    """The faces of a collection, one row each: where, how good, and their embeddings.

    Attributes:
        sources: The photo of each face (a path as given).
        boxes: (N, 4) ``x1, y1, x2, y2`` in the photo's pixels.
        detection: (N,) the detector's scores.
        quality: (N,) quality in [0, 1] (:func:`face_quality`).
        embeddings: (N, D) float32 unit-length embeddings.
    """

    sources: list[str]
    boxes: np.ndarray
    detection: np.ndarray
    quality: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, rows: np.ndarray | Sequence[int]) -> FaceTable:
        rows = np.asarray(rows, dtype=np.int64)
        return FaceTable([self.sources[i] for i in rows.tolist()], self.boxes[rows], self.detection[rows],
                         self.quality[rows], self.embeddings[rows])  # fmt: skip

    @classmethod
    def empty(cls, dim: int) -> FaceTable:
        return cls([], np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, dim), np.float32))

    @classmethod
    def concat(cls, tables: Sequence[FaceTable]) -> FaceTable:
        return cls([s for t in tables for s in t.sources], np.concatenate([t.boxes for t in tables]),
                   np.concatenate([t.detection for t in tables]), np.concatenate([t.quality for t in tables]),
                   np.concatenate([t.embeddings for t in tables]))  # fmt: skip


@dataclass
class FoundFaces:
    """What :func:`find_faces` found: the faces, the photos without one or unreadable, and the time per stage."""

    faces: FaceTable
    photos: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def face_quality(image: np.ndarray, box: Sequence[float], points: Optional[np.ndarray] = None) -> dict[str, float]:
    """How usable a face is for telling people apart: ``size``, ``sharpness``, ``pose`` in [0, 1], and their product ``quality``.

    - ``size``: the box's shorter side over :data:`SIZE_REFERENCE` pixels (at most 1);
    - ``sharpness``: the variance of the Laplacian of the face scaled to 64x64 grey, over
      :data:`SHARPNESS_REFERENCE` (at most 1): a blurred face has few edges;
    - ``pose``: from the 5 landmarks (dlib's order: two corners of one eye, two of the other, the
      base of the nose): 1 when the nose sits midway between the eyes, falling to 0 as it reaches
      an eye (a profile); 1 without landmarks.

    Args:
        image: The photo, uint8 RGB (H, W, 3) or grey (H, W).
        box: ``x1, y1, x2, y2`` pixels.
        points: (5, 2) landmarks ``x, y`` in the photo's pixels, or None.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(0.0, min(x2 - x1, y2 - y1))
    size = min(1.0, side / SIZE_REFERENCE)
    height, width = image.shape[:2]
    left, top = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    right, bottom = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
    sharpness = 0.0
    if right - left >= 2 and bottom - top >= 2:
        crop = image[top:bottom, left:right]
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
        grey = cv2.resize(grey, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA)
        sharpness = min(1.0, float(cv2.Laplacian(grey, cv2.CV_64F).var()) / SHARPNESS_REFERENCE)
    pose = 1.0
    if points is not None and len(points) == 5:
        p = np.asarray(points, dtype=np.float64)
        eye_a, eye_b, nose = p[0:2].mean(axis=0), p[2:4].mean(axis=0), p[4]
        axis = eye_a - eye_b
        span = float(np.linalg.norm(axis))
        if span > 1e-6:
            along = float((nose - (eye_a + eye_b) / 2) @ axis) / (span * span / 2)  # -1 / +1: the nose under an eye
            pose = float(np.clip(1.0 - abs(along), 0.0, 1.0))
        else:
            pose = 0.0
    return {"size": size, "sharpness": sharpness, "pose": pose, "quality": size * sharpness * pose}


class _Chips:
    """The batched path of an aligned :class:`~facetorch.inference.embedder.Embedder`: 5 points, chips, one forward per batch.

    The same numbers as ``Embedder.embed_faces`` (the landmarks and the chip are made the same
    way), but the chips of many photos go through the network together; the landmarks also give
    the pose for the quality.
    """

    def __init__(self, embedder: Any) -> None:
        from facetorch.models.shape_predictor import load_shape_predictor

        spec = embedder.input
        self.embedder = embedder
        self.size = int(spec.image_size[0])
        self.finish = spec.finish()
        self.predictor = load_shape_predictor(spec.align_model)

    @staticmethod
    def supports(embedder: Any) -> bool:
        spec = getattr(embedder, "input", None)
        return (getattr(spec, "align", None) == "five_point" and hasattr(embedder, "task")
                and spec.image_size[0] == spec.image_size[1])  # fmt: skip

    def points(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from facetorch.data.alignment import landmarks

        return landmarks(image, boxes - np.array([0.0, 0.0, 1.0, 1.0]), self.predictor)

    def chips(self, image: np.ndarray, points: np.ndarray) -> list[Any]:
        from facetorch.data.alignment import chip_transform, extract_chip

        return [self.finish(extract_chip(image, chip_transform(p, self.size), self.size)) for p in points]

    def embed(self, tensors: Sequence[Any]) -> np.ndarray:
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(tensors), self.embedder.batch_size):
                batch = torch.stack(list(tensors[start : start + self.embedder.batch_size]))
                rows.append(self.embedder.task.embed(batch.to(self.embedder.device)).float().cpu())
        return torch.cat(rows).numpy().astype(np.float32)


def find_faces(
    files: Sequence[Path | str],
    embedder: Any,
    detector: Any,
    *,
    photos_per_batch: int = 8,
    chips_per_batch: int = 64,
    progress: bool = True,
    on_skip: Optional[Callable[[str, str], None]] = None,
) -> FoundFaces:
    """Find, align, score and embed every face of every photo.

    Args:
        files: The photos.
        embedder: An :class:`~facetorch.inference.embedder.Embedder` (5-point aligned ones run batched) or
            anything with ``embed_faces(image, boxes)`` (or ``embed``, see
            :func:`facetorch.recognition.pipeline.embed_faces`).
        detector: A face detector (``detect_batch``).
        photos_per_batch: Photos given to the detector at once.
        chips_per_batch: Faces gathered before one embedding pass (the network's own ``batch_size``
            still bounds a forward pass).
        progress: A progress bar on a terminal.
        on_skip: Called with (file, reason) for each photo that is unreadable or has no face.

    Returns:
        The faces (in the order of ``files``, then the detector's), the skipped photos and the seconds per stage.
    """
    from facetorch.recognition.pipeline import embed_faces

    dim = int(getattr(embedder, "embedding_dim", 0))
    chips = _Chips(embedder) if _Chips.supports(embedder) else None
    channels = int(getattr(embedder, "channels", 3))
    seconds = {"read": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0}
    skipped: dict[str, str] = {}
    tables: list[FaceTable] = []
    pending: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Any]]] = []
    waiting = 0

    def skip(path: str, reason: str) -> None:
        skipped[path] = reason
        if on_skip is not None:
            on_skip(path, reason)

    def flush() -> None:
        nonlocal waiting
        if not pending:
            return
        start = time.perf_counter()
        embeddings = chips.embed([t for *_, tensors in pending for t in tensors])  # type: ignore[union-attr]
        seconds["embed"] += time.perf_counter() - start
        sources = [s for names, *_ in pending for s in names]
        tables.append(FaceTable(sources, np.concatenate([p[1] for p in pending]), np.concatenate([p[2] for p in pending]),
                                np.concatenate([p[3] for p in pending]), embeddings))  # fmt: skip
        pending.clear()
        waiting = 0

    files = [str(f) for f in files]
    for start in io.progress(range(0, len(files), photos_per_batch), "faces", enabled=progress):
        batch, images = [], []
        began = time.perf_counter()
        for path in files[start : start + photos_per_batch]:
            try:
                images.append(read_image(path, 3))
                batch.append(path)
            except ImageReadError as error:
                skip(path, f"unreadable: {' '.join(str(error).split())}")
        detected = time.perf_counter()
        seconds["read"] += detected - began
        found = detector.detect_batch(images) if images else []
        seconds["detect"] += time.perf_counter() - detected
        for path, image, (boxes, scores) in zip(batch, images, found):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if len(boxes) == 0:
                skip(path, "no face found")
                continue
            began = time.perf_counter()
            picture = _channels(image, channels)
            points = chips.points(picture, boxes) if chips is not None else [None] * len(boxes)
            quality = np.array([face_quality(image, box, p)["quality"] for box, p in zip(boxes, points)], np.float32)
            if chips is not None:
                tensors = chips.chips(picture, points)
                seconds["align"] += time.perf_counter() - began
                pending.append(([path] * len(boxes), boxes, np.asarray(scores, np.float32), quality, tensors))
                waiting += len(boxes)
                if waiting >= chips_per_batch:
                    flush()
                continue
            seconds["align"] += time.perf_counter() - began
            began = time.perf_counter()
            embeddings = np.asarray(embed_faces(embedder, image, boxes), dtype=np.float32)
            seconds["embed"] += time.perf_counter() - began
            tables.append(FaceTable([path] * len(boxes), boxes, np.asarray(scores, np.float32), quality, embeddings))
    flush()
    faces = FaceTable.concat(tables) if tables else FaceTable.empty(dim)
    faces.embeddings = _unit(faces.embeddings) if len(faces) else faces.embeddings
    return FoundFaces(faces, len(files), skipped, {k: round(v, 3) for k, v in seconds.items()})


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1 and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image


# ----------------------------------------------------------------------------------------------
# Collections
# ----------------------------------------------------------------------------------------------


def collection_files(images: str | Path, flag: str = "--images") -> list[Path]:
    """Every image file under a folder (recursively, sorted), or one image file.

    Raises:
        FileNotFoundError: nothing there. ValueError: no image in it.
    """
    root = Path(images)
    if root.is_file():
        if not is_image_file(root):
            raise ValueError(f"{flag} {str(root)!r} is not an image file (or a folder of photos)")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{flag} {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if is_image_file(p) and not any(part.startswith(".") for part in p.parts))
    if not files:
        raise ValueError(f"{flag} {str(root)!r} holds no image file (searched recursively)")
    return files


def make_cluster_set(
    roots: Sequence[str | Path],
    output: str | Path,
    *,
    seed: int = 0,
    max_per_person: Optional[int] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A collection to cluster, with its truth: the photos of folders of people, under shuffled names in one folder.

    ``output/photos/photo_NNNNN.<ext>`` holds the photos (copied), ``output/truth.csv`` says who is in
    each (``source, x1, y1, x2, y2, person``: the file name and the face's box, where a deep-funneled
    LFW photo holds it: (68, 68, 182, 182) of 250x250, scaled to the photo's size), and
    ``output/summary.json`` the counts. People of the same folder name under several roots are one
    person.

    Args:
        roots: Folders of ``<person>/<photos>``.
        output: New or empty folder.
        seed: Shuffles the names and draws the photos kept.
        max_per_person: Keep a random number of each person's photos, from 1 to this many (at most
            all of them): a collection unlike the roots' (None: every photo).
        overwrite: Write into a non-empty folder.
    """
    from facetorch.data.images import read_image_size

    output = io.check_output_folder(output, overwrite)
    if max_per_person is not None and max_per_person < 1:
        raise ValueError(f"--max_per_person must be 1 or more, got {max_per_person}")
    people: dict[str, list[Path]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"--images {str(root)!r} is not a folder of person folders")
        for folder in sorted(d for d in root.iterdir() if d.is_dir()):
            people.setdefault(folder.name, []).extend(list_images(folder))
    people = {name: files for name, files in people.items() if files}
    if not people:
        raise ValueError(f"--images {', '.join(map(str, roots))}: no person folder with photos (expected ROOT/<person>/<photo>)")
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, Path]] = []
    for name, files in people.items():
        if max_per_person is not None:
            count = int(rng.integers(1, min(len(files), max_per_person) + 1))
            files = [files[i] for i in sorted(rng.choice(len(files), count, replace=False).tolist())]
        chosen.extend((name, f) for f in files)
    order = rng.permutation(len(chosen))
    rows = []
    for number, index in enumerate(order.tolist()):
        name, path = chosen[index]
        target = output / "photos" / f"photo_{number:05d}{path.suffix.lower()}"
        with io.atomic_open(target, "wb") as handle:
            handle.write(path.read_bytes())
        width, height = read_image_size(path)
        fx1, fy1, fx2, fy2 = LFW_FACE_FRACTIONS
        rows.append({"source": target.name, "x1": round(fx1 * width), "y1": round(fy1 * height), "x2": round(fx2 * width),
                     "y2": round(fy2 * height), "person": name})  # fmt: skip
    io.write_csv(output / TRUTH_NAME, TRUTH_FIELDS, rows)
    counts = np.bincount(np.unique([r["person"] for r in rows], return_inverse=True)[1])
    summary = {"photos": len(rows), "people": int(len(counts)), "people_with_one_photo": int((counts == 1).sum()),
               "most_photos": int(counts.max()), "seed": seed, "max_per_person": max_per_person,
               "roots": [str(r) for r in roots], "output": str(output)}  # fmt: skip
    io.write_json(output / "summary.json", summary)
    return summary


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
             f"--clusters {html.escape(str(output))} --cluster N --name NAME --gallery people.db</code></p>"]  # fmt: skip
    for sheet in sheets:
        anchor, title = Path(sheet["file"]).stem, html.escape(sheet["title"])
        parts.append(f'<section id="{anchor}"><h2>{title}</h2>'
                     f'<img src="{html.escape(sheet["file"])}" alt="{title}" loading="lazy"></section>')  # fmt: skip
    parts.append("</body></html>")
    io.write_text(output / "index.html", "\n".join(parts) + "\n")
