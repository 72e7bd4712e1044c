"""``tools/benchmark.py --task gallery``: the face database at 10^4 .. 10^6 people against exact search and the .npz gallery.

For each size, a child process (:func:`facetorch.bench.gallery.measure_database` with
:func:`~facetorch.recognition.open_gallery`; a process of its own, with nothing else loaded, so
that its peak memory is the gallery's) enrols the synthetic population into a new SQLite gallery and measures: the
enrolment rate (store writes, then the index build), identify per probe at batch 64 and batch 1,
enrolling one more person into the full gallery (its transaction, then the next identify, which
catches the index up), calibration, the files' size and its own peak memory; then, in the same
process and in turns with the gallery, the plain NumPy product and a bare ``faiss.IndexFlatIP``
over every row, and recall@1 against exact search (the same person as the NumPy product's best
row). A second child reopens the gallery (its persisted index). This process times the ``.npz``
:class:`Gallery` of facetorch 0.1 up to 2 x 10^4 people (its calibration at 10^4 only: it holds an
N x N float64 matrix).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch.bench.gallery import Population, per_probe_ms

__all__ = ["run_gallery_benchmark"]

KNOWN, STRANGERS = 2000, 500  # probes
LEGACY_MAX = 20_000  # people the .npz gallery is timed at (its identify); its calibration up to LEGACY_CALIBRATION
LEGACY_CALIBRATION = 10_000
CHILD = """
import json, sys
from pathlib import Path
from facetorch.bench.gallery import measure_database, measure_reopen
from facetorch.recognition import open_gallery
work = Path(sys.argv[2])
if sys.argv[1] == "reopen":
    print(json.dumps(measure_reopen(open_gallery, work, work / "probes.npy")), flush=True)
else:
    efs = tuple(int(ef) for ef in sys.argv[3].split(",") if ef)
    print(json.dumps(measure_database(open_gallery, int(sys.argv[1]), work, work / "probes.npy", efs)), flush=True)
"""


def _legacy(population: Population, probes: np.ndarray, calibrate: bool) -> dict[str, Any]:
    """Facetorch 0.1's .npz Gallery on the same people: build, identify, (calibrate), save."""
    from facetorch.recognition.gallery import Gallery, GalleryMeta

    names, rows, files = (sum((list(b[0]) for b in population.blocks()), []), population.rows(),
                          sum((list(b[2]) for b in population.blocks()), []))  # fmt: skip
    gallery = Gallery(rows, GalleryMeta("synthetic", threshold=0.6, names=names, files=files))
    out = {"people": population.people, "identify_batch_64_ms": per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 64, 256),
           "identify_batch_1_ms": per_probe_ms(lambda q: gallery.identify(q, 0.0), probes, 1, 10)}  # fmt: skip
    if calibrate:
        start = time.perf_counter()
        out["open_set_threshold"] = gallery.calibrate_open_set()
        out["calibration_s"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        gallery.save(Path(work) / "g.npz")
        out["save_s"] = time.perf_counter() - start  # what each enrolment cost: the whole file again
        out["file_mb"] = os.path.getsize(Path(work) / "g.npz") / 2**20
    return out


def run_gallery_benchmark(sizes: list[int], legacy: bool = True, work_root: Optional[str] = None,
                          ef_values: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Every size's measurements, recall@1 and the baselines' ratios (ours / theirs < 1: ours is faster).

    ``ef_values``: HNSW candidate counts at which identify is also timed and its recall taken (``ef_sweep``).
    """
    results: dict[str, Any] = {"data": "synthetic 128-d face-like embeddings (facetorch.bench.face_vectors), 2 images a "
                                       "person; probes: another photo of 2,000 enrolled people and of 500 strangers",
                               "sizes": []}  # fmt: skip
    for people in sizes:
        population = Population(people)
        probes, truth = population.probes(KNOWN, STRANGERS)
        with tempfile.TemporaryDirectory(dir=work_root) as work:
            np.save(Path(work) / "probes.npy", probes)
            ours = {}
            for step in (str(people), "reopen"):  # each a process of its own: its peak memory is its own
                command = [sys.executable, "-c", CHILD, step, work, ",".join(map(str, ef_values))]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"the gallery benchmark at {people} people failed: {done.stderr[-2000:]}")
                ours.update(json.loads(done.stdout.strip().splitlines()[-1]))
        compared = ours.pop("compared")
        hits = np.array(compared.pop("hits"))
        answers = compared.pop("answers")
        known = min(KNOWN, people)  # the first probes are of enrolled people, the rest strangers
        ours["recall_at_1_known"] = float(hits[:known].mean())
        ours["recall_at_1_strangers"] = float(hits[known:].mean())
        ours["rank1_accuracy_known"] = float(np.mean([a == t for a, t in zip(answers[:known], truth[:known])]))
        for point in compared.get("ef_sweep", []):
            swept = np.array(point.pop("hits"))
            point["recall_at_1_known"], point["recall_at_1_strangers"] = float(swept[:known].mean()), float(swept[known:].mean())
        row: dict[str, Any] = {"ours": ours, **compared}
        for batch in ("64", "1"):
            times = compared[f"identify_batch_{batch}_ms"]
            for other in times:
                if other != "ours":
                    row[f"identify_batch_{batch}_ratio_vs_{other}"] = times["ours"] / times[other]
        if legacy:
            limit = min(people, LEGACY_MAX)
            row["npz_gallery"] = _legacy(Population(limit), probes, calibrate=limit <= LEGACY_CALIBRATION)
            if limit == people:
                legacy_ms = row["npz_gallery"]["identify_batch_64_ms"]
                row["identify_batch_64_ratio_vs_npz_gallery"] = ours["identify_batch_64_ms_alone"] / legacy_ms  # not in turns
                if "calibration_s" in row["npz_gallery"]:
                    row["calibration_ratio_vs_npz_gallery"] = ours["calibration_s"] / row["npz_gallery"]["calibration_s"]
        results["sizes"].append(row)
    return results
