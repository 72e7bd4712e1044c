"""Grouping faces by person: the threshold, the neighbour graph (FAISS), average linkage and the other candidates."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

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
        average = _pair_dots(sums, low, high) / (total[low] * total[high])
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


def _pair_dots(rows: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """``rows[a[i]] . rows[b[i]]`` for every i, a chunk of pairs at a time (never all pairs' rows at once)."""
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", rows[a[start:stop]], rows[b[start:stop]])
    return out


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
    first = _pair_dots(sums, candidate, target) / (total[candidate] * total[target])
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
