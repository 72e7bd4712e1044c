"""The face database: one gallery interface over every store, searched through a FAISS index.

:func:`open_gallery` opens (or makes) the gallery behind a ``--gallery`` value (see
:mod:`facetorch.recognition.stores`) and returns a :class:`FaceGallery`: enrol, remove, rename,
list, identify, calibrate. Writes go straight to the store, each one a transaction, so a crash
leaves whole people only. Searches go through a :class:`~facetorch.recognition.vector_index.VectorIndex`
built from the store on first use, persisted beside an SQLite file, and brought up to date from
the store's change log at every call (one query when nothing changed): a recognition app sees
people enrolled by another process without a restart.

Identification asks the index for each probe's nearest rows, then scores the people they belong
to over all their rows in float64: a person's score is the best of their images, as the
``.npz`` :class:`~facetorch.recognition.gallery.Gallery` computes it. Open-set calibration asks
the index for each row's nearest rows of other people (:mod:`~facetorch.recognition.calibration`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch.recognition.calibration import open_set_threshold
from facetorch.recognition.gallery import UNKNOWN, GalleryError, file_key
from facetorch.recognition.stores import GallerySettings, Rows, Store, check_name, open_store
from facetorch.recognition.vector_index import EXACT_ROWS, VectorIndex, faiss_threads

__all__ = ["ADD_CHUNK", "FaceGallery", "migrate_gallery", "open_enrolled_gallery", "open_gallery"]

ADD_CHUNK = 20_000  # rows per transaction of add_many (whole people each)
EXACT_CANDIDATES = 4  # rows asked of an exact index per probe (near ties are scored again in float64)
RERANK_ROWS = 32  # rows asked of a graph index per probe; their people are scored over all their rows
PROBE_CHUNK = 256  # probes matched at a time


def open_gallery(target: str | Path, create: bool = False, dim: Optional[int] = None, fingerprint: Optional[str] = None,
                 *, settings: Optional[dict[str, Any]] = None, flag: str = "--gallery",
                 exact_rows: int = EXACT_ROWS) -> FaceGallery:  # fmt: skip
    """The gallery at ``target``: ``X.db`` or ``sqlite:///X`` (SQLite), ``postgresql://...``, or ``X.npz`` (read-only).

    Args:
        target: Where the gallery is.
        create: Make it when it does not exist (SQLite or PostgreSQL), for ``dim``-d embeddings of the model
            with ``fingerprint``; an existing one must be of that model.
        dim: The embedding size (needed to create).
        fingerprint: The model's fingerprint (needed to create).
        settings: More settings of a new gallery (``threshold``, ``model``, ``detector``, ``alignment``,
            ``open_set_fpir``).
        flag: The option that named it, for messages.
        exact_rows: Rows from which the index is approximate (IVF) instead of exact.

    Raises:
        FileNotFoundError: no such gallery and not ``create``. GalleryError: not a gallery, another model's,
            or a database that does not answer. ValueError: a target of no known kind.
    """
    new = None
    if create:
        if dim is None or fingerprint is None:
            raise ValueError("open_gallery(create=True) needs dim and fingerprint: the embedding size and the model's")
        new = GallerySettings(model_fingerprint=str(fingerprint), dim=int(dim), **(settings or {}))
    gallery = FaceGallery(open_store(target, create, new, flag), exact_rows=exact_rows)
    try:
        meta = gallery.meta
        if fingerprint is not None and meta.model_fingerprint != fingerprint:
            raise GalleryError(f"{gallery.target} was made by another model (fingerprint {meta.model_fingerprint}); this "
                               f"model's is {fingerprint}: embeddings of two models cannot be compared; enrol into a new "
                               "gallery")  # fmt: skip
        if dim is not None and meta.dim != dim:
            raise GalleryError(f"{gallery.target} holds {meta.dim}-d embeddings, this model's are {dim}-d: it was made by "
                               "another model; enrol into a new gallery")  # fmt: skip
    except BaseException:
        gallery.close()
        raise
    return gallery


def open_enrolled_gallery(target: str | Path, enrol: str = "gallery.py enroll") -> FaceGallery:
    """:func:`open_gallery` to name faces from: an empty gallery is refused, naming the command that fills it (``enrol``)."""
    gallery = open_gallery(target)
    if len(gallery) == 0:
        gallery.close()
        raise GalleryError(f"--gallery {str(target)!r} is empty: enrol people first ({enrol})")
    return gallery


def migrate_gallery(source: str | Path, target: str | Path) -> dict[str, Any]:
    """Copy every person, image key, embedding and setting of ``source`` (e.g. an old ``.npz``) into a new ``target``.

    Raises:
        GalleryError: ``target`` already holds people (nothing is overwritten).
    """
    with open_gallery(source) as old:
        meta = old.meta
        extra = {key: value for key, value in meta.to_record().items() if key not in ("model_fingerprint", "dim")}
        with open_gallery(target, create=True, dim=meta.dim, fingerprint=meta.model_fingerprint,
                          settings={k: (float("nan") if v is None and k.endswith(("threshold", "fpir")) else v)
                                    for k, v in extra.items()}, flag="--to") as new:  # fmt: skip
            if len(new):
                raise GalleryError(f"{new.target} already holds {new.num_people} people: migrate into a new gallery")
            added = 0
            for names, files, embeddings in old.store.records():
                added += new.add_many(names, embeddings, files)
            new.configure(**{k: v for k, v in meta.to_record().items() if k in ("open_set_threshold", "calibrated_people")
                             and v is not None})  # fmt: skip
            return {"from": str(source), "to": str(target), "people": new.num_people, "rows": added,
                    "open_set_threshold": new.meta.open_set_threshold if np.isfinite(new.meta.open_set_threshold) else None}


class FaceGallery:
    """Enrolled people in a store, searched through a vector index (see :func:`open_gallery`)."""

    def __init__(self, store: Store, exact_rows: int = EXACT_ROWS) -> None:
        self.store = store
        self.exact_rows = exact_rows
        self._index: Optional[VectorIndex] = None
        self._lock = threading.RLock()
        self._built = False  # the index was built (or reshaped) here: worth saving
        self._changed_rows = 0  # rows the index caught up with since it was loaded or saved
        self.ef_search: Optional[int] = None  # HNSW candidates for identify (None: search_ef's for the size)

    # ------------------------------------------------------------------ what it holds
    @property
    def target(self) -> str:
        """The store, as messages name it (``--gallery 'people.db'``)."""
        return self.store.target

    @property
    def meta(self) -> GallerySettings:
        """The settings: model fingerprint, pair and open-set thresholds, model source, detector, alignment."""
        return self.store.settings()

    @property
    def people(self) -> list[str]:
        """Enrolled names, sorted."""
        return [name for name, _ in self.store.counts()]

    @property
    def num_people(self) -> int:
        """How many people are enrolled (without listing them)."""
        return self.store.num_people()

    def counts(self) -> list[tuple[str, int]]:
        """(name, images) of every person, sorted by name."""
        return self.store.counts()

    def __len__(self) -> int:
        return self.store.num_rows()

    def rows(self) -> tuple[list[str], np.ndarray]:
        """Every row: the names (one per row) and the embeddings (N, D), for classifiers fitted on them."""
        parts = list(self.store.all_rows())
        rows = Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "people", "embeddings"))) if parts \
            else Rows.empty(self.meta.dim)  # fmt: skip
        named = self.store.names_of(np.unique(rows.people))
        return [named[int(p)] for p in rows.people], rows.embeddings

    def configure(self, **changes: Any) -> GallerySettings:
        """Store settings (``detector``, ``model``, ``open_set_fpir``, ...)."""
        return self.store.update_settings(**changes)

    # ------------------------------------------------------------------ writes
    def _checked(self, embeddings: Any, count: int, what: str, files: Sequence[Any]) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        dim = self.meta.dim
        if embeddings.ndim != 2 or embeddings.shape[1] != dim or len(embeddings) != count:
            raise GalleryError(f"{what}: expected {count} embedding rows of {dim} numbers (one per file), got shape "
                               f"{tuple(embeddings.shape)}; were they made by another model?")  # fmt: skip
        bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
        if len(bad):
            named = ", ".join(str(files[i]) for i in bad[:3])
            raise GalleryError(f"{len(bad)} embedding(s) of {what} are not finite (NaN or inf): {named}; the model gave no "
                               "usable embedding for these images (a broken checkpoint, or images it cannot take): leave "
                               "them out")  # fmt: skip
        return embeddings

    def add(self, name: str, embeddings: Any, files: Sequence[Path | str]) -> int:
        """Enrol images of ``name`` in one transaction (files already enrolled are skipped); returns how many were added.

        A file is a path (stored resolved) or any unique label (a camera frame's).
        """
        check_name(name)
        files = list(files)
        embeddings = self._checked(embeddings, len(files), repr(name), files)
        return self.store.add([name] * len(files), embeddings, [file_key(f) for f in files]) if files else 0

    def add_many(self, names: Sequence[str], embeddings: Any, files: Sequence[Path | str]) -> int:
        """Enrol many people at once (one name and one file key per row), in transactions of whole people.

        Returns:
            How many rows were added (files already enrolled are skipped).
        """
        names, files = list(names), list(files)
        if len(names) != len(files):
            raise ValueError(f"add_many takes one name and one file per row, got {len(names)} names and {len(files)} files")
        embeddings = self._checked(embeddings, len(files), "add_many", files)
        rows_of: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            rows_of.setdefault(name, []).append(i)
        for name in rows_of:
            check_name(name)
        keys = [file_key(f) for f in files]
        added, batch = 0, []
        for position, rows in enumerate(rows_of.values()):
            batch += rows
            if len(batch) >= ADD_CHUNK or position == len(rows_of) - 1:
                added += self.store.add([names[i] for i in batch], embeddings[batch], [keys[i] for i in batch])
                batch = []
        return added

    def remove(self, name: str) -> int:
        """Remove a person and their images; returns how many images. KeyError when there is no such person."""
        return self.store.remove_person(name)

    def remove_file(self, file: Path | str) -> str:
        """Remove one enrolled image by its file (or label); returns the person's name."""
        return self.store.remove_file(file_key(file))

    def rename(self, old: str, new: str) -> None:
        """Rename a person. KeyError: no ``old``; ValueError: ``new`` is taken or not a valid name."""
        self.store.rename(old, check_name(new, "new name"))

    # ------------------------------------------------------------------ the index
    def refresh(self) -> VectorIndex:
        """The index, up to date with the store (loaded or built on first use)."""
        with self._lock:
            index = self._index
            if index is None:
                index = self._load_or_build()
            pages, removed, version = self.store.changes_since(index.version)
            if version < index.version:  # the store went back (restored from a copy): the index cannot follow
                index = self._build()
                pages, removed, version = self.store.changes_since(index.version)
            index.remove(removed)
            self._changed_rows += len(removed) + sum(index.add(rows) for rows in pages)
            index.version = version
            if index.needs_reshape():
                faiss_threads()
                index.reshape()
                self._built = True
            self._index = index
            return index

    def _load_or_build(self) -> VectorIndex:
        faiss_threads()
        path = self.store.index_path
        loaded = VectorIndex.load(path) if path else None
        if (loaded is not None and loaded.uid == self.store.uid and loaded.dim == self.store.settings().dim
                and loaded.version <= self.store.version() and not loaded.needs_reshape(self.store.num_rows())):  # fmt: skip
            loaded.exact_rows = self.exact_rows if loaded.exact else loaded.exact_rows
            return loaded
        return self._build()

    def _build(self) -> VectorIndex:
        """A new index of every row of the store (a graph when there are many)."""
        index = VectorIndex(self.meta.dim, self.exact_rows)
        index.uid, index.version = self.store.uid, self.store.version()  # before reading: later changes are caught up
        rows = self.store.num_rows()
        if rows >= self.exact_rows:
            index.start_graph(rows)
        for part in self.store.all_rows():
            index.add(part, into_graph=True)
        self._built, self._changed_rows = True, 0
        if rows >= self.exact_rows:
            self.save_index(index)  # minutes of work at millions of rows: keep it at once
        return index

    def save_index(self, index: Optional[VectorIndex] = None) -> bool:
        """Persist the index beside the store (SQLite); returns whether it was written."""
        index = index or self._index
        if index is None or not self.store.index_path or self.store.read_only:
            return False
        try:
            index.save(self.store.index_path)
        except OSError:
            return False  # a folder this user cannot write: the index is a cache, rebuilt when missing
        self._built, self._changed_rows = False, 0
        return True

    def index_info(self) -> dict[str, Any]:
        """What the index is (kind, rows, lists, probes)."""
        return self.refresh().describe()

    # ------------------------------------------------------------------ matching
    def _probes(self, embeddings: Any) -> np.ndarray:
        embeddings = np.asarray(embeddings)
        dim = self.meta.dim
        if embeddings.ndim != 2 or (len(embeddings) and embeddings.shape[1] != dim):
            raise GalleryError(f"the probes have shape {tuple(embeddings.shape)}, but the gallery holds {dim}-d embeddings: "
                               "were they made by another model? Use the model the gallery was enrolled with")  # fmt: skip
        if embeddings.size and not np.isfinite(embeddings).all():
            raise GalleryError("A probe's embedding is not finite (NaN or inf): the model gave no usable embedding for it")
        return np.ascontiguousarray(embeddings, np.float32)

    def best_matches(self, embeddings: Any) -> tuple[list[str], np.ndarray]:
        """For each probe (N, D), the most similar enrolled person and that cosine similarity (the best of their images)."""
        queries = self._probes(embeddings)
        parts = [self._best(queries[start : start + PROBE_CHUNK]) for start in range(0, len(queries), PROBE_CHUNK)]
        if not parts:
            return self._best(queries)
        return [name for names, _ in parts for name in names], np.concatenate([scores for _, scores in parts])

    def _best(self, queries: np.ndarray, tries: int = 3) -> tuple[list[str], np.ndarray]:
        """:meth:`best_matches` of at most :data:`PROBE_CHUNK` probes (the re-ranking matrix is probes x candidates)."""
        with self._lock:
            index = self.refresh()
            if len(index) == 0:
                raise GalleryError("The gallery is empty: enrol people first")
            if not len(queries):
                return [], np.empty(0)
            _, ids = self._nearest(index, queries)
            found = np.where(ids >= 0, index.person_of[np.maximum(ids, 0)], 0)  # (probes, k) person ids, 0: none
            rows = index.rows_of_people(found[found > 0])  # every image of each candidate, from memory
        winners, scores = _rerank(queries, found, rows)
        if not (winners > 0).all():  # a probe's candidates were all removed meanwhile: look again
            if tries > 1:
                return self._best(queries, tries - 1)
            raise GalleryError(f"{self.target} changed under this search three times running: try again")
        named = self.store.names_of(winners)
        if len(named) < len(np.unique(winners)):  # removed between the two reads
            if tries > 1:
                return self._best(queries, tries - 1)
            raise GalleryError(f"{self.target} changed under this search three times running: try again")
        return [named[int(p)] for p in winners], scores

    def nearest_rows(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        """The index's nearest rows of each probe, as identify asks for them: (scores, row ids; -1: none), before re-ranking."""
        queries = self._probes(embeddings)
        with self._lock:
            return self._nearest(self.refresh(), queries)

    def _nearest(self, index: VectorIndex, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return index.search(queries, EXACT_CANDIDATES if index.exact else RERANK_ROWS, ef=self.ef_search)

    def default_threshold(self) -> float:
        """The open-set threshold when calibrated, else the model's pair threshold."""
        meta = self.meta
        return meta.open_set_threshold if np.isfinite(meta.open_set_threshold) else meta.threshold

    def identify(self, embeddings: Any, threshold: Optional[float] = None) -> list[tuple[str, float]]:
        """The (name, cosine similarity) of each probe; ``unknown`` below the threshold (default: :meth:`default_threshold`).

        A threshold of 0 (or less) names every probe's best match.
        """
        threshold = self.default_threshold() if threshold is None else float(threshold)
        if not np.isfinite(threshold):
            raise GalleryError("The gallery has no calibrated threshold (the checkpoint never validated); pass --threshold")
        names, scores = self.best_matches(embeddings)
        return [(name if (score >= threshold or threshold <= 0.0) else UNKNOWN, float(score))
                for name, score in zip(names, scores)]  # fmt: skip

    def calibrate_open_set(self) -> float:
        """Calibrate the open-set threshold on the enrolled people (O(N k) through the index) and store it.

        Each image plays a stranger against the others; the threshold accepts at most
        ``meta.open_set_fpir`` of them. NaN (with a warning) under 3 people.
        """
        with self._lock:
            index = self.refresh()
            meta, people = self.meta, self.store.num_people()
            faiss_threads()
            threshold = open_set_threshold(index, meta.open_set_fpir, people, meta.threshold, self.store.names_of)
        self.store.update_settings(open_set_threshold=threshold, calibrated_people=people)
        return threshold

    # ------------------------------------------------------------------ checks against a model
    def check_model(self, embedder: Any, source: str | Path) -> None:
        """Refuse a gallery that another model embedded (a checkpoint and its export are the same model)."""
        meta = self.meta
        dim = int(getattr(embedder, "embedding_dim", meta.dim))
        if len(self) and dim != meta.dim:
            raise GalleryError(f"Gallery {str(source)!r} holds {meta.dim}-d embeddings, this model's are {dim}-d: it was made "
                               "by another model; enrol the people again into a new gallery with this model")  # fmt: skip
        if meta.model_fingerprint != embedder.fingerprint:
            raise GalleryError(f"Gallery {str(source)!r} was made by another model (fingerprint {meta.model_fingerprint}); "
                               f"this model's is {embedder.fingerprint}. Embeddings of different models cannot be compared: "
                               "enrol the people again into a new gallery with this model.")  # fmt: skip

    def check_setup(self, detector: Optional[str], alignment: str, source: str | Path, enrolling: bool) -> list[str]:
        """Refuse faces aligned another way, and (when ``enrolling``) found by another detector; notes for the user."""
        meta, name = self.meta, str(source)
        if meta.alignment is not None and meta.alignment != alignment:
            raise GalleryError(f"Gallery {name!r} holds faces aligned with {meta.alignment!r}, this model aligns with "
                               f"{alignment!r}; enrol the people again into a new gallery")  # fmt: skip
        if detector is None or meta.detector == detector:
            return []
        if enrolling and len(self):
            raise GalleryError(f"Gallery {name!r} holds faces found by {meta.detector!r}; enrolling faces found by "
                               f"{detector!r} would mix two detectors: pass --detector {meta.detector} (or --faces), "
                               "or enrol into a new gallery")  # fmt: skip
        if enrolling:
            self.configure(detector=detector)
            return []
        return [f"the gallery's faces were found by {meta.detector or 'an unrecorded detector'}; recognising with {detector}"]

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        """Keep the index when it was built or moved much here, and release the store's connections."""
        with self._lock:
            if self._index is not None and (self._built or self._changed_rows > max(1000, len(self._index) // 100)):
                self.save_index()
            self._index = None
            self.store.close()

    def __enter__(self) -> FaceGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rerank(queries: np.ndarray, found: np.ndarray, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's best candidate person (0: none left) over all their rows, and that cosine, in float64.

    Only (probe, its candidates' rows) pairs are scored: a few hundred dot products, not a product of
    every probe with every candidate's rows (which a busy machine's BLAS threads made 100 ms a batch).
    """
    winners, scores = np.zeros(len(queries), np.int64), np.full(len(queries), -np.inf)
    if not len(rows):
        return winners, scores
    order = np.argsort(rows.people, kind="stable")
    people, vectors = rows.people[order], rows.embeddings[order].astype(np.float64)
    unique, starts, counts = np.unique(people, return_index=True, return_counts=True)
    probe, slot = np.nonzero(found > 0)
    where = np.searchsorted(unique, found[probe, slot])
    known = (where < len(unique)) & (unique[np.minimum(where, len(unique) - 1)] == found[probe, slot])
    probe, slot, where = probe[known], slot[known], where[known]  # people removed meanwhile are passed over
    if not len(probe):
        return winners, scores
    repeat = counts[where]
    pair_probe, pair_person = np.repeat(probe, repeat), np.repeat(found[probe, slot], repeat)
    pair_row = np.repeat(starts[where], repeat) + (np.arange(repeat.sum()) - np.repeat(np.cumsum(repeat) - repeat, repeat))
    similarity = np.einsum("ij,ij->i", queries[pair_probe].astype(np.float64), vectors[pair_row])
    best = np.lexsort((-similarity, pair_probe))  # by probe, the best pair first
    first = best[np.r_[True, pair_probe[best][1:] != pair_probe[best][:-1]]]
    winners[pair_probe[first]], scores[pair_probe[first]] = pair_person[first], similarity[first]
    return winners, scores
