"""The vector index behind a gallery: FAISS, exact below :data:`EXACT_ROWS` rows, a graph (HNSW) above.

Rows are the store's image rows, under the store's own ids, with the person of each id beside
them (``person_of[id]``, 0 where no row is). Below :data:`EXACT_ROWS` rows the index is a flat
inner-product index (exact: a person's best row is the best there is); above it, an HNSW graph
over the same rows (``IndexHNSWFlat``, inner product, M=32), searched with :func:`search_ef`
candidates. HNSW keeps the rows as they are, so a score it returns is exact: only a row the graph
walk did not reach can be missed, and the gallery re-ranks the people found over all their rows.
Why HNSW and not an inverted file: on embeddings clustered as a face network's are, IVF-Flat
needed a quarter of its lists probed (a quarter of the rows scanned) for recall@1 0.99 and
IVF-PQ fast scan with exact re-ranking stayed below 0.99; HNSW reached it at 28x the speed of
exact search (docs/database.md). An HNSW graph cannot drop a row: a removed row is marked (its
person set to 0) and passed over in results, and the graph is rebuilt once a tenth is removed.
Rows added to a graph after it was built or loaded wait in a small exact index beside it (searched
with it, saved with it) and join the graph :data:`RECENT_ROWS` at a time: growing the graph's
arrays copies them whole, and a process that had loaded 2 x 10^6 rows and caught up one new person
peaked 0.9 GB higher for it.

The index is persisted in one file (``<gallery>.faiss`` beside an SQLite gallery), written
atomically and tagged with the store's uid and version; a reader that loads it catches up through
the store's change log, and one from another store, a newer version or an unreadable file is
rebuilt from the store instead: it never disagrees with the store.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import io
from facetorch.recognition import index_mirror
from facetorch.recognition.stores.base import Rows

__all__ = ["EXACT_ROWS", "VectorIndex", "faiss_threads", "search_ef"]

EXACT_ROWS = 65_536  # flat (exact) below this many rows; see docs/database.md for the measurement
GRAPH_M = 32  # HNSW neighbours per node (64 on the ground layer)
BUILD_EF = 40  # HNSW candidates while inserting
DEAD_SHARE = 0.1  # rebuild the graph once this share of its rows is removed
MAGIC = b"FTGIDX02"
SMALL_BATCH = 16  # fewer queries than this are searched on one thread
RESORT_ROWS = 65_536  # rows added since the person sort after which it is made again
RECENT_ROWS = 16_384  # rows a graph keeps in its exact side index before they join the graph


def _faiss() -> Any:
    import faiss

    return faiss


def faiss_threads() -> int:
    """Give FAISS torch's thread count (the two OpenMP pools otherwise fight over the cores); returns it.

    Without torch loaded (a process that only searches a gallery) FAISS keeps its own count.
    """
    torch = sys.modules.get("torch")
    threads = max(1, torch.get_num_threads()) if torch is not None else _faiss().omp_get_max_threads()
    _faiss().omp_set_num_threads(threads)
    return threads


@contextmanager
def _threads_for(queries: int) -> Iterator[None]:
    """One FAISS thread for a few queries.

    An OpenMP region for one probe costs more than it saves, and on a busy machine (threads waiting
    for a core) up to 30 ms instead of 0.05 (measured: IndexIDMap2 over 4,000 rows).
    """
    if queries >= SMALL_BATCH:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # this thread's setting (OpenMP keeps it per thread)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def search_ef(rows: int) -> tuple[int, int]:
    """(candidates for identify, for calibration) of an HNSW search over ``rows`` rows.

    Recall@1 against exact search on face-like embeddings (M=32, efConstruction=40, the people of
    the 32 rows found re-ranked over all their rows): at 2 x 10^5 rows 0.990 at 128 candidates; at
    2 x 10^6 rows 0.9895 / 0.991 / 0.993 / 0.994 at 512 / 576 / 640 / 768 (docs/database.md). So:
    160 up to 250,000 rows, 512 up to 10^6, 640 up to 2.5 x 10^6, 768 above. Calibration asks half as many.
    """
    ef = 160 if rows <= 250_000 else 512 if rows <= 1_000_000 else 640 if rows <= 2_500_000 else 768
    return ef, max(64, ef // 2)


class VectorIndex:
    """FAISS over a gallery's rows, under the store's ids.

    Args:
        dim: The embedding size.
        exact_rows: Rows from which an HNSW graph replaces the flat index.
    """

    def __init__(self, dim: int, exact_rows: int = EXACT_ROWS) -> None:
        self.dim = int(dim)
        self.exact_rows = int(exact_rows)
        self.person_of = np.zeros(1024, np.int64)
        self.position_of = np.full(1024, -1, np.int64)  # id -> the row's place in the index's storage, -1: none
        self._by_person: Optional[tuple[np.ndarray, np.ndarray]] = None  # (people sorted, their ids), made on demand
        self._added_since_sort: dict[int, list[int]] = {}  # person -> ids added since _by_person was made
        self._added_count = 0  # how many ids _added_since_sort holds
        self.version = -1  # the store version the rows reflect
        self.uid = ""
        self.dead = 0  # removed rows the graph still holds
        self.graph = False
        self._ids: Optional[np.ndarray] = None  # the flat index's ids, by position (read again after any change)
        self.index = self._flat()
        # A graph's rows added after it was built or loaded wait in a small exact index (place -2 - i):
        # adding to the graph grows its arrays, and a grown std::vector is copied whole (a reader that
        # caught up two new rows at 2 x 10^6 peaked 0.9 GB higher). They join the graph in bulk.
        self.recent: Optional[Any] = None
        self.mirror_factory = index_mirror.gpu_flat_factory()  # with a GPU, a graph is searched as an exact copy there
        self._mirror: Optional[index_mirror.ExactMirror] = None

    # ------------------------------------------------------------------ shape
    def _flat(self) -> Any:
        faiss = _faiss()
        self.graph, self.recent, self._mirror = False, None, None
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _hnsw(self, rows: int = 0) -> Any:
        """An empty HNSW graph, its arrays made ready for ``rows`` rows.

        A std::vector that outgrows its capacity is copied whole to a new one twice the size: at
        2 x 10^6 rows a bulk build held the old and new copies of its 1 GB of vectors at once.
        Resizing to the final size and back to 0 keeps the capacity (FAISS's vectors have no
        ``reserve``), so the build fills them in place.
        """
        faiss = _faiss()
        graph = faiss.IndexHNSWFlat(self.dim, GRAPH_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = BUILD_EF
        if rows:
            vectors, links = faiss.downcast_index(graph.storage).codes, graph.hnsw.neighbors
            vectors.resize(rows * self.dim * 4)
            vectors.resize(0)
            links.resize(rows * (2 * GRAPH_M + 2))  # the ground layer's 2M links, and ~M/(M-1) above it
            links.resize(0)
        self.graph, self.recent, self._mirror = True, None, None
        return faiss.IndexIDMap2(graph)  # keeps the graph alive

    @property
    def exact(self) -> bool:
        """Whether a search sees every row (the flat index)."""
        return not self.graph

    def __len__(self) -> int:
        return int(self.index.ntotal) - self.dead + self.recent_rows

    @property
    def recent_rows(self) -> int:
        """Rows waiting in the graph's exact side index."""
        return int(self.recent.ntotal) if self.recent is not None else 0

    def efs(self) -> tuple[int, int]:
        """(identify, calibration) HNSW candidates at this size."""
        return search_ef(len(self))

    def describe(self) -> dict[str, Any]:
        """What the index is, for summaries."""
        if self.exact:
            return {"kind": "flat", "rows": len(self)}
        ef, calibration = self.efs()
        if self.mirror_factory is not None:
            return {"kind": "hnsw", "rows": len(self), "search": "exact, on the GPU", "recent_rows": self.recent_rows}
        return {"kind": "hnsw", "rows": len(self), "m": GRAPH_M, "ef_construction": BUILD_EF, "ef_search": ef,
                "calibration_ef": calibration, "removed_rows_held": self.dead, "recent_rows": self.recent_rows}  # fmt: skip

    def needs_reshape(self, rows: Optional[int] = None) -> bool:
        """Whether ``rows`` live rows (default: the index's) call for the other kind, or the graph holds too many dead."""
        rows = len(self) if rows is None else rows
        if self.exact:
            return rows >= self.exact_rows
        return rows < self.exact_rows // 2 or self.dead > DEAD_SHARE * max(1, int(self.index.ntotal))

    def reshape(self) -> None:
        """Rebuild as the size asks: flat, or a graph of the live rows."""
        parts = list(self.iter_rows())
        self.index = self._hnsw(len(self)) if len(self) >= self.exact_rows else self._flat()
        self.dead, self._ids = 0, None
        for ids, vectors in parts:
            self.index.add_with_ids(vectors, ids)
        self._place_rows()

    def start_graph(self, rows: int = 0) -> None:
        """Start empty as a graph (a bulk build of about ``rows`` rows from a store)."""
        self.index, self.dead = self._hnsw(rows), 0

    # ------------------------------------------------------------------ rows
    def add(self, rows: Rows, into_graph: bool = False) -> int:
        """Add rows whose ids are not there yet; returns how many.

        On a graph they wait in the exact side index (``recent``) unless ``into_graph`` (a bulk build),
        and join the graph once :data:`RECENT_ROWS` wait.
        """
        if not len(rows):
            return 0
        self._grow(int(rows.ids.max()))
        new = self.person_of[rows.ids] == 0
        if not new.any():
            return 0
        ids, people = rows.ids[new].astype(np.int64), rows.people[new].astype(np.int64)
        vectors = np.ascontiguousarray(rows.embeddings[new], np.float32)
        if self.graph and not into_graph:
            if self.recent is None:
                self.recent = _faiss().IndexIDMap2(_faiss().IndexFlatIP(self.dim))
            start = self.recent_rows
            self.recent.add_with_ids(vectors, ids)
            self.position_of[ids] = -2 - np.arange(start, start + len(ids))
        else:
            start = int(self.index.ntotal)
            self.index.add_with_ids(vectors, ids)
            self.position_of[ids] = np.arange(start, start + len(ids))
        self._ids = None
        self.person_of[ids] = people
        if self.recent_rows >= RECENT_ROWS:
            self._join_recent()
        if self._by_person is not None:
            for person, row in zip(people.tolist(), ids.tolist()):
                self._added_since_sort.setdefault(person, []).append(row)
            self._added_count += len(ids)
            if self._added_count > max(RESORT_ROWS, len(self) // 20):
                self._by_person = None  # sorted again at the next search
        return int(new.sum())

    def _grow(self, top: int) -> None:
        """Room in the id-indexed maps for ids up to ``top``."""
        if top < len(self.person_of):
            return
        size = max(top + 1, 2 * len(self.person_of))
        self.person_of = np.concatenate([self.person_of, np.zeros(size - len(self.person_of), np.int64)])
        self.position_of = np.concatenate([self.position_of, np.full(size - len(self.position_of), -1, np.int64)])

    def _join_recent(self) -> None:
        """Move the side index's rows into the graph (the graph's arrays grow here, once for many rows)."""
        ids, vectors = self._ids_of(self.recent), self._storage(self.recent)  # a view: the side index must live on
        live = self.person_of[ids] != 0
        start = int(self.index.ntotal)
        self.index.add_with_ids(np.ascontiguousarray(vectors[live]), ids[live])
        self.position_of[ids[live]] = np.arange(start, start + int(live.sum()))
        self.recent = None

    def _main_ids(self) -> np.ndarray:
        """The main index's ids by place (kept until it changes)."""
        if self._ids is None or len(self._ids) != int(self.index.ntotal):
            self._ids = self._ids_of(self.index)
        return self._ids

    @staticmethod
    def _ids_of(index: Any) -> np.ndarray:
        return _faiss().vector_to_array(index.id_map).astype(np.int64)

    def _place_rows(self) -> None:
        """Read every id's place again (after the index was rebuilt or loaded)."""
        self.position_of[:] = -1
        for index in self._indexes():
            self._place(index)

    def _place(self, index: Any) -> None:
        """Read the places of ``index``'s ids again (the main index's, or the side index's as -2 - i)."""
        ids = self._ids_of(index)
        self._grow(int(ids.max(initial=0)))
        places = np.arange(len(ids))
        self.position_of[ids] = places if index is self.index else -2 - places

    def _storage(self, index: Any = None) -> np.ndarray:
        """The vectors of ``index`` (default: the graph or flat one) by place, (ntotal, dim) float32.

        A view, valid until that index changes.
        """
        faiss = _faiss()
        index = self.index if index is None else index
        inner = faiss.downcast_index(index.index)
        storage = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
        total = int(index.ntotal)
        if not total:
            return np.empty((0, self.dim), np.float32)
        return np.asarray(faiss.rev_swig_ptr(storage.get_xb(), total * self.dim)).reshape(total, self.dim)

    def _vectors_at(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of live ``ids`` (copies), from the main storage or the side index."""
        places = self.position_of[ids]
        if self.recent is None or (places >= 0).all():
            return self._storage()[places]
        out = np.empty((len(ids), self.dim), np.float32)
        main = places >= 0
        out[main] = self._storage()[places[main]]
        out[~main] = self._storage(self.recent)[-2 - places[~main]]
        return out

    def rows_of_people(self, people: np.ndarray) -> Rows:
        """Every live row of these people, from memory (ids, people, vectors as copies).

        The people's ids are found in a sort of the person map (made once, then kept up to date
        by the rows added since), their vectors in the index's own storage: no read of the store.
        """
        people = np.unique(np.asarray(people, np.int64).ravel())
        people = people[people > 0]
        if not len(people):
            return Rows.empty(self.dim)
        if self._by_person is None:
            live = np.flatnonzero(self.person_of)
            order = np.argsort(self.person_of[live], kind="stable")
            self._by_person, self._added_since_sort, self._added_count = (self.person_of[live][order], live[order]), {}, 0
        sorted_people, sorted_ids = self._by_person
        low, high = np.searchsorted(sorted_people, people, "left"), np.searchsorted(sorted_people, people, "right")
        counts = high - low
        picks = np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        ids, owners = sorted_ids[picks], np.repeat(people, counts)
        if self._added_since_sort:
            extra = [(row, person) for person in people.tolist() for row in self._added_since_sort.get(person, ())]
            if extra:
                ids = np.concatenate([ids, np.asarray([row for row, _ in extra], np.int64)])
                owners = np.concatenate([owners, np.asarray([person for _, person in extra], np.int64)])
        live = self.person_of[ids] == owners  # removed rows (person 0 now) are passed over
        ids = ids[live]
        return Rows(ids, self.person_of[ids], self._vectors_at(ids))

    def remove(self, ids: np.ndarray) -> int:
        """Remove rows by id (ids not there are passed over); returns how many."""
        ids = np.unique(np.asarray(ids, np.int64))
        ids = ids[(ids >= 0) & (ids < len(self.person_of))]
        ids = ids[self.person_of[ids] != 0]
        if len(ids):
            waiting = self.position_of[ids] <= -2
            if waiting.any():
                self.recent.remove_ids(_faiss().IDSelectorArray(ids[waiting]))
            if self.graph:
                self.dead += int((~waiting).sum())  # an HNSW graph cannot drop a node: marked, passed over, rebuilt later
            else:
                self.index.remove_ids(_faiss().IDSelectorArray(ids))
                self._ids = None
            self.person_of[ids] = 0
            if waiting.any():
                self._place(self.recent)  # the side index was compacted; the graph's places stand
            if not self.graph:
                self._place(self.index)  # the flat storage was compacted
            self.position_of[ids] = -1
        return len(ids)

    def all_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every row (copies)."""
        parts = list(self.iter_rows())
        if not parts:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _indexes(self) -> list[Any]:
        return [self.index] + ([self.recent] if self.recent is not None else [])

    def iter_rows(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of the live rows, ``chunk`` at a time, as copies."""
        for index in self._indexes():
            ids, vectors = self._ids_of(index), self._storage(index)
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                live = self.person_of[part] != 0
                if live.any():
                    yield part[live].copy(), vectors[start : start + chunk][live].copy()

    def iter_ids(self, chunk: int = 1 << 20) -> Iterator[tuple[np.ndarray, None]]:
        """The live ids, ``chunk`` at a time (no vectors copied)."""
        for index in self._indexes():
            ids = self._ids_of(index)
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                yield part[self.person_of[part] != 0], None

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these ids (all must be there)."""
        ids = np.asarray(ids, np.int64).ravel()
        if not len(ids):
            return np.empty((0, self.dim), np.float32)
        return self._vectors_at(ids)

    def search(self, queries: np.ndarray, k: int, ef: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live rows of each query: (scores float32, ids; -1 where fewer were found).

        ``ef``: HNSW candidates (default: :func:`search_ef`'s for identify, at least ``k``).
        """
        queries = np.ascontiguousarray(queries, np.float32)
        if len(self) == 0:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        if self.exact and len(queries) >= SMALL_BATCH:
            return self._flat_search(queries, max(1, min(int(k), len(self))))
        with _threads_for(len(queries)):
            if self.exact:
                return self.index.search(queries, max(1, min(int(k), len(self))))
            faiss = _faiss()
            wanted = max(1, min(int(k) + min(self.dead, 2 * int(k)), int(self.index.ntotal)))  # room for marked rows
            if self.mirror_factory is not None:
                if self._mirror is None:
                    self._mirror = index_mirror.ExactMirror(self.dim, self.mirror_factory)
                scores, places = self._mirror.search(self._storage(), queries, wanted)
                ids = np.where(places >= 0, self._main_ids()[np.maximum(places, 0)], -1)
            else:
                params = faiss.SearchParametersHNSW(efSearch=max(int(ef or self.efs()[0]), wanted))
                scores, ids = self.index.search(queries, wanted, params=params)
            if self.recent_rows:  # the rows waiting beside the graph, searched exactly
                near_scores, near_ids = self.recent.search(queries, min(int(k), self.recent_rows))
                scores, ids = np.concatenate([scores, near_scores], 1), np.concatenate([ids, near_ids], 1)
        if self.dead or self.recent_rows:
            gone = (ids >= 0) & (self.person_of[np.maximum(ids, 0)] == 0)
            scores, ids = np.where(gone, -np.inf, scores), np.where(gone, -1, ids)
            order = np.argsort(-scores, axis=1, kind="stable")
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return scores[:, :k], ids[:, :k]

    def _flat_search(self, queries: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The flat index's exact search as NumPy products over its own storage, ``block`` queries at a time.

        The same answer as FAISS's flat search, 2.5x faster on this machine for a batch of probes
        (NumPy's BLAS product and a partial sort, against FAISS's blocked product and heaps).
        """
        rows = self._storage()
        total = len(rows)
        scores, ids = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        for start in range(0, len(queries), block):
            similarity = queries[start : start + block] @ rows.T
            top = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < total else np.argsort(-similarity, axis=1)
            best = np.take_along_axis(similarity, top, 1)
            order = np.argsort(-best, axis=1, kind="stable")
            scores[start : start + block] = np.take_along_axis(best, order, 1)
            ids[start : start + block] = self._main_ids()[np.take_along_axis(top, order, 1)]
        return scores, ids

    # ------------------------------------------------------------------ file
    def save(self, path: str | Path) -> None:
        """Write the index, its person map, uid and version atomically to ``path``."""
        faiss = _faiss()
        top = int(np.flatnonzero(self.person_of).max()) + 1 if self.person_of.any() else 0
        header = json.dumps({"uid": self.uid, "version": self.version, "dim": self.dim, "graph": self.graph,
                             "dead": self.dead, "exact_rows": self.exact_rows, "map_rows": top,
                             "recent_rows": self.recent_rows}).encode()  # fmt: skip
        with io.atomic_open(path, "wb") as handle:
            handle.write(MAGIC + struct.pack("<Q", len(header)) + header)
            handle.write(self.person_of[:top].astype("<i8").tobytes())
            for index in self._indexes() if self.recent_rows else [self.index]:
                faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))

    @classmethod
    def load(cls, path: str | Path) -> Optional[VectorIndex]:
        """The index saved at ``path``, or None when there is none or it cannot be read (it is rebuilt then)."""
        faiss = _faiss()
        if not os.path.isfile(path):
            return None
        try:
            with open(path, "rb") as handle:
                if handle.read(len(MAGIC)) != MAGIC:
                    return None
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(size))
                people = np.frombuffer(handle.read(8 * int(header["map_rows"])), "<i8").astype(np.int64)
                index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
                recent = faiss.read_index(faiss.PyCallbackIOReader(handle.read)) if header.get("recent_rows") else None
        except (OSError, ValueError, KeyError, RuntimeError, struct.error):
            return None
        loaded = cls(int(header["dim"]), int(header["exact_rows"]))
        loaded.index = index
        loaded.person_of = np.concatenate([people, np.zeros(1024, np.int64)])
        loaded.position_of = np.full(len(loaded.person_of), -1, np.int64)
        loaded.uid, loaded.version = str(header["uid"]), int(header["version"])
        loaded.graph, loaded.dead, loaded.recent = bool(header["graph"]), int(header["dead"]), recent
        if len(loaded) != int(np.count_nonzero(loaded.person_of)) or index.d != loaded.dim:
            return None
        loaded._place_rows()
        return loaded
