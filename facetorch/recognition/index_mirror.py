"""An exact copy of a graph index's rows on a GPU, searched in the graph's place when FAISS has a CUDA device.

An HNSW graph is FAISS's CPU answer to "too many rows to scan"; a GPU scans two million 128-d
rows faster than a CPU walks the graph, and exactly. With ``faiss-gpu`` installed and a device
visible, :func:`gpu_flat_factory` gives the flat GPU index that :class:`ExactMirror` fills from the
graph's own storage, in the same order (a row's place is its place in the graph), so the graph
stays the store's copy on the host (re-ranking, saving) and only the search moves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

__all__ = ["ExactMirror", "gpu_flat_factory"]


@functools.cache
def gpu_flat_factory() -> Optional[Callable[[int], Any]]:
    """A maker of flat inner-product GPU indexes, or None without ``faiss-gpu`` or a CUDA device."""
    import faiss

    if not hasattr(faiss, "GpuIndexFlatIP") or faiss.get_num_gpus() < 1:
        return None
    resources = faiss.StandardGpuResources()
    return lambda dim: faiss.GpuIndexFlatIP(resources, dim)


class ExactMirror:
    """The rows of a graph's storage in a flat index (on the GPU), kept up with the graph as it grows.

    Args:
        dim: The embedding size.
        make_flat: Makes the flat index for ``dim``-d rows (:func:`gpu_flat_factory`'s, or a CPU one in tests).
    """

    def __init__(self, dim: int, make_flat: Callable[[int], Any]) -> None:
        self.flat = make_flat(int(dim))

    def search(self, storage: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best places of each query in ``storage`` (the graph's rows, (N, D)): (scores, places; -1: none)."""
        have = int(self.flat.ntotal)
        if have > len(storage):
            raise RuntimeError(f"the mirror holds {have} rows but the graph {len(storage)}: rebuild the mirror")
        if have < len(storage):  # the graph grew (rows joined it): copy the new tail only
            self.flat.add(np.ascontiguousarray(storage[have:], np.float32))
        if not len(storage):
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        return self.flat.search(np.ascontiguousarray(queries, np.float32), max(1, min(int(k), len(storage))))
