"""Gallery benchmark pieces that need no gallery: the synthetic population, probes, exact answers, the bare baselines.

A population of ``people`` synthetic people (:class:`~facetorch.bench.face_vectors.FaceVectors`),
``per_person`` images each, enrolled as ``person_<number>``; probes are other photos of enrolled
people (``known``) and photos of people never enrolled (``strangers``). The exact answer for each
probe (the person of its most similar row, by a plain NumPy matrix product in blocks) is what
recall@1 is measured against; the same product, and a bare ``faiss.IndexFlatIP`` (what uniface
and deepface's FAISS request do), are timed as baselines, in turns with the gallery, in the
gallery's own process (:func:`measure_database`, with :func:`facetorch.recognition.open_gallery`
passed in: this room sits below recognition).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facetorch.bench.face_vectors import FaceVectors

__all__ = ["BLOCK", "Population", "compare", "exact_answers", "measure_database", "measure_reopen", "per_probe_ms"]

BLOCK = 20_000  # people generated at a time (their float64 draws are 16 MB a thousand people)


class Population:
    """``people`` synthetic people with ``per_person`` images each, and probes of them and of strangers."""

    def __init__(self, people: int, per_person: int = 2, seed: int = 0, dim: int = 128) -> None:
        self.people, self.per_person = int(people), int(per_person)
        self.faces = FaceVectors(dim=dim, seed=seed)

    def name(self, person: int) -> str:
        """The enrolled name of person number ``person``."""
        return f"person_{person:07d}"

    def blocks(self) -> Iterator[tuple[list[str], np.ndarray, list[str]]]:
        """(names, rows, file keys) of every image, :data:`BLOCK` people at a time."""
        for start in range(0, self.people, BLOCK):
            ids = np.arange(start, min(self.people, start + BLOCK))
            rows = self.faces.images(ids, self.per_person)
            names = [self.name(p) for p in np.repeat(ids, self.per_person)]
            yield names, rows, [f"{name}/{i % self.per_person}.jpg" for i, name in enumerate(names)]

    def rows(self) -> np.ndarray:
        """Every row, (people x per_person, dim) float32 (the baselines hold them all)."""
        return np.concatenate([rows for _, rows, _ in self.blocks()])

    def probes(self, known: int, strangers: int, seed: int = 1) -> tuple[np.ndarray, list[str]]:
        """New photos of ``known`` enrolled people and of ``strangers`` people never enrolled; their true names."""
        rng = np.random.default_rng(seed)
        enrolled = np.sort(rng.choice(self.people, size=min(known, self.people), replace=False))
        others = np.arange(self.people, self.people + strangers)
        probes = np.concatenate([self.faces.images(enrolled, 1, shot=1), self.faces.images(others, 1, shot=1)])
        return probes, [self.name(p) for p in enrolled] + ["unknown"] * strangers

    def newcomer(self) -> tuple[str, np.ndarray, np.ndarray]:
        """One more person: name, two enrolment rows, one probe."""
        person = self.people + 10_000_000
        return self.name(person), self.faces.images([person], 2), self.faces.images([person], 1, shot=1)


def exact_answers(rows: np.ndarray, per_person: int, probes: np.ndarray, batch: int = 64) -> tuple[np.ndarray, float]:
    """The person number of each probe's most similar row (a NumPy product in float32), and ms per probe."""
    best = np.empty(len(probes), np.int64)
    start = time.perf_counter()
    for first in range(0, len(probes), batch):
        similarity = probes[first : first + batch] @ rows.T
        best[first : first + batch] = similarity.argmax(axis=1) // per_person
    return best, (time.perf_counter() - start) / max(1, len(probes)) * 1e3


def per_probe_ms(search: Callable[[np.ndarray], Any], probes: np.ndarray, batch: int, limit: int) -> float:
    """Median ms per probe of ``search`` over batches of ``batch`` (at most ``limit`` probes, after one warm-up)."""
    probes = probes[: max(batch, limit)]
    search(probes[:batch])
    times = []
    for first in range(0, len(probes) - batch + 1, batch):
        start = time.perf_counter()
        search(probes[first : first + batch])
        times.append((time.perf_counter() - start) / batch * 1e3)
    return float(np.median(times))


def _alternating(searches: dict[str, Callable[[np.ndarray], Any]], probes: np.ndarray, batch: int, limit: int,
                 repeats: int) -> dict[str, float]:  # fmt: skip
    """Median ms per probe of each search, measured in turns (A B C A B C ...): a busy machine's drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in searches}
    for _ in range(repeats):
        for name, search in searches.items():
            times[name].append(per_probe_ms(search, probes, batch, limit))
    return {name: float(np.median(values)) for name, values in times.items()}


def compare(gallery: Any, population: Population, probes: np.ndarray, repeats: int = 3,
            ef_values: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """The gallery's identify against the plain NumPy product and a bare ``faiss.IndexFlatIP`` over every row.

    All three are timed in turns in this process, at batch 64 and batch 1 (FAISS's flat index at batch
    1 also on one thread, as the gallery searches one probe); recall@1 is the share of probes whose
    gallery answer is the person of the NumPy product's best row. ``ef_values``: HNSW candidate
    counts to time identify and take its hits at as well (``ef_sweep``).
    """
    import faiss

    rows = population.rows()
    flat = faiss.IndexFlatIP(rows.shape[1])
    flat.add(rows)
    threads = faiss.omp_get_max_threads()

    def flat_one_thread(q: np.ndarray) -> Any:
        faiss.omp_set_num_threads(1)
        try:
            return flat.search(q, 1)
        finally:
            faiss.omp_set_num_threads(threads)

    searches = {"ours": lambda q: gallery.identify(q, 0.0), "numpy_matmul": lambda q: (q @ rows.T).argmax(axis=1),
                "faiss_index_flat_ip": lambda q: flat.search(q, 1)}  # fmt: skip
    walk = {"ours_index_search_only": gallery.nearest_rows}  # identify's walk (or scan) alone, without the re-ranking
    batch_64 = _alternating({**searches, **walk}, probes, 64, 320, repeats)
    batch_1 = _alternating({**searches, "faiss_index_flat_ip_one_thread": flat_one_thread}, probes, 1, 20, repeats)
    exact, _ = exact_answers(rows, population.per_person, probes)

    def answers_and_hits() -> tuple[list[str], list[bool]]:
        answers = [name for name, _ in gallery.identify(probes, 0.0)]
        return answers, [answer == population.name(person) for answer, person in zip(answers, exact)]

    answers, hits = answers_and_hits()
    out = {"identify_batch_64_ms": batch_64, "identify_batch_1_ms": batch_1, "answers": answers, "hits": hits}
    sweep = []
    for ef in ef_values:  # the same gallery searched with other candidate counts (HNSW only)
        gallery.ef_search = int(ef)
        sweep.append({"ef_search": int(ef), "hits": answers_and_hits()[1],
                      "identify_batch_64_ms": per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 64, 640),
                      "identify_batch_1_ms": per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 1, 100)})  # fmt: skip
    gallery.ef_search = None
    if sweep:
        out["ef_sweep"] = sweep
    return out


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's peak across exec)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_database(open_gallery: Callable[..., Any], people: int, work: Path, probes_file: Path,
                     ef_values: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A new SQLite gallery of ``people`` people, measured: enrolment, identify, one more person, calibration, files, memory.

    ``open_gallery`` is :func:`facetorch.recognition.open_gallery` (passed in: this room sits below recognition).
    Run it in a process of its own: its peak memory is the process's.
    """
    import faiss

    population = Population(people)
    probes = np.load(probes_file)
    path = work / "gallery.db"
    out: dict[str, Any] = {"people": people, "rows": people * population.per_person}
    start = time.perf_counter()
    with open_gallery(path, create=True, dim=128, fingerprint="synthetic", settings={"threshold": 0.6}) as gallery:
        for names, rows, files in population.blocks():
            gallery.add_many(names, rows, files)
        out["store_s"] = time.perf_counter() - start
        out["peak_mb_after_store"] = _peak_mb()  # the synthetic rows drawn, in float64, count here
        start = time.perf_counter()
        out["index"] = gallery.refresh().describe()
        out["index_build_s"] = time.perf_counter() - start
        out["faiss_threads"] = faiss.omp_get_max_threads()
        out["peak_mb_after_index"] = _peak_mb()
        out["enrol_people_per_s"] = people / (out["store_s"] + out["index_build_s"])
        gallery.identify(probes, 0.0)  # the probes once, untimed (warm caches)
        out["identify_batch_64_ms_alone"] = per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 64, 640)
        out["identify_batch_1_ms_alone"] = per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 1, 100)
        name, rows, probe = population.newcomer()
        start = time.perf_counter()
        gallery.add(name, rows, [f"{name}/0.jpg", f"{name}/1.jpg"])
        out["enrol_one_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        found = gallery.identify(probe, 0.0)[0][0]
        out["enrol_one_then_identify_ms"] = (time.perf_counter() - start) * 1e3  # the index catches up here
        out["newcomer_found"] = found == name
        start = time.perf_counter()
        out["open_set_threshold"] = gallery.calibrate_open_set()
        out["calibration_s"] = time.perf_counter() - start
        out["peak_mb"] = _peak_mb()  # the gallery's: before the comparison below holds every row twice more
        out["compared"] = compare(gallery, population, probes, ef_values=ef_values if out["index"]["kind"] == "hnsw" else ())
    out["file_mb"] = os.path.getsize(path) / 2**20
    out["index_file_mb"] = os.path.getsize(str(path) + ".faiss") / 2**20 if os.path.exists(str(path) + ".faiss") else 0.0
    return out


def measure_reopen(open_gallery: Callable[..., Any], work: Path, probes_file: Path) -> dict[str, Any]:
    """Open the gallery :func:`measure_database` left (its persisted index) and identify one probe: seconds, peak memory."""
    probes = np.load(probes_file)
    start = time.perf_counter()
    with open_gallery(work / "gallery.db") as gallery:
        gallery.identify(probes[:1], 0.0)
        seconds = time.perf_counter() - start
    return {"reopen_and_identify_s": seconds, "peak_mb_reopened": _peak_mb()}
