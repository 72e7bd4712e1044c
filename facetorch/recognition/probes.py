"""Probe images against a gallery: identify each, verify a pair, and score an open-set protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import evaluation, io
from facetorch.data.files import is_image_file
from facetorch.inference.embedder import Embedder
from facetorch.recognition.database import FaceGallery
from facetorch.recognition.enrollment import person_folders
from facetorch.recognition.gallery import GalleryError

__all__ = ["check_probe_people", "evaluate_open_set", "identify", "probe_files", "verify"]


def probe_files(images: str | Path) -> list[Path]:
    """One image file, or every image under a folder (recursively)."""
    source = Path(images)
    if source.is_file():
        if not is_image_file(source):
            raise ValueError(f"--images {str(source)!r} is not an image file")
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"--images {str(source)!r} does not exist")
    files = sorted(p for p in source.rglob("*") if is_image_file(p))
    if not files:
        raise ValueError(f"--images {str(source)!r} holds no image")
    return files


def identify(
    embedder: Embedder, gallery: FaceGallery, images: str | Path, threshold: Optional[float] = None
) -> list[dict[str, Any]]:
    """Rows ``file, name, similarity, error`` for each probe image (name ``unknown`` below the threshold)."""
    files = probe_files(images)
    embeddings, used, skipped = embedder.embed_files(files)
    answers = dict(zip(used, gallery.identify(embeddings, threshold))) if used else {}
    rows = []
    for path in files:
        if path in answers:
            name, score = answers[path]
            rows.append({"file": str(path), "name": name, "similarity": f"{score:.4f}", "error": ""})
        else:
            rows.append({"file": str(path), "name": "", "similarity": "", "error": skipped[path]})
    return rows


def verify(embedder: Embedder, image1: str | Path, image2: str | Path, threshold: Optional[float] = None) -> dict[str, Any]:
    """Whether two images show the same person: cosine similarity against the threshold."""
    embeddings, used, skipped = embedder.embed_files([Path(image1), Path(image2)])
    if skipped:
        raise ValueError("; ".join(f"{path}: {reason}" for path, reason in skipped.items()))
    threshold = embedder.threshold if threshold is None else threshold
    similarity = float(embeddings[0] @ embeddings[1])
    return {"similarity": similarity, "threshold": threshold, "same": bool(similarity >= threshold)}


def check_probe_people(known: Mapping[str, Any], unknown: Mapping[str, Any], enrolled: Sequence[str],
                       known_dir: str | Path, unknown_dir: str | Path) -> None:  # fmt: skip
    """Refuse probe folders that contradict the gallery, naming the people.

    A known probe must be of an enrolled person, an unknown probe of someone never enrolled (else
    a stranger would be scored as someone the gallery knows, or the other way round).

    Raises:
        GalleryError: a known person who is not enrolled, or an unknown person who is.
    """
    people = set(enrolled)
    missing = sorted(set(known) - people)
    if missing:
        raise GalleryError(f"--known {str(known_dir)!r}: {len(missing)} person(s) not enrolled in the gallery "
                           f"({len(people)} enrolled): {io.first_few(missing)}; known probes must be of enrolled people "
                           f"(move them to --unknown, or enrol them)")  # fmt: skip
    wrong = sorted(set(unknown) & people)
    if wrong:
        raise GalleryError(f"--unknown {str(unknown_dir)!r}: {len(wrong)} person(s) enrolled in the gallery: "
                           f"{io.first_few(wrong)}; unknown probes must be of people never enrolled (move them to --known)")


def evaluate_open_set(
    embedder: Embedder,
    gallery: FaceGallery,
    known: str | Path,
    unknown: str | Path,
    threshold: Optional[float] = None,
    fpirs: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """Open-set identification of probes of enrolled people and of people never enrolled.

    The probes are ``known/<person>/*`` and ``unknown/<person>/*``.

    Returns:
        ``identification_rate`` and ``unknown_rejection_rate`` at the threshold (the gallery's
        default unless given), the same two at the checkpoint's pair threshold
        (``..._at_pair_threshold``), ``dir_at_fpir_<f>`` for each FPIR, ``rank1_acc`` (known probes,
        no threshold), ``svm_acc`` and ``knn_acc`` (a linear SVM and 1-NN fitted on the enrolled
        embeddings, scored on the known probes), ``threshold``, ``pair_threshold``, ``num_known``,
        ``num_unknown``, ``num_samples``.
    """
    threshold = gallery.default_threshold() if threshold is None else threshold
    folders = {flag: person_folders(folder, flag=flag) for flag, folder in (("--known", known), ("--unknown", unknown))}
    check_probe_people(folders["--known"], folders["--unknown"], gallery.people, known, unknown)
    scores, predicted, truth, known_embeddings, skipped = [], [], [], [], {}
    for flag, people in folders.items():
        is_known, label = flag == "--known", flag[2:]
        for name, files in io.progress(people.items(), label, total=len(people), enabled=embedder.progress):
            embeddings, used, missed = embedder.embed_files(files, show_progress=False)
            skipped.update({str(path): reason for path, reason in missed.items()})
            if not used:
                continue
            names, best = gallery.best_matches(embeddings)
            if is_known:
                known_embeddings.append(embeddings)
            scores.extend(best.tolist())
            predicted.extend(names)
            truth.extend([name if is_known else None] * len(used))
    if skipped:
        io.notice(f"skipped {len(skipped)} probe image(s) that could not be embedded: "
                  f"{io.first_few([f'{path} ({reason})' for path, reason in skipped.items()], 3)}")  # fmt: skip
    if not truth:
        raise ValueError(f"--known {str(known)!r} and --unknown {str(unknown)!r}: none of the probe images could be embedded, "
                         "so nothing was evaluated; give readable face images")  # fmt: skip
    report: dict[str, Any] = evaluation.open_set_metrics(scores, predicted, truth, threshold)
    at_pair = evaluation.open_set_metrics(scores, predicted, truth, gallery.meta.threshold)
    report["identification_rate_at_pair_threshold"] = at_pair["identification_rate"]
    report["unknown_rejection_rate_at_pair_threshold"] = at_pair["unknown_rejection_rate"]
    for fpir in fpirs:
        report[f"dir_at_fpir_{fpir:g}"] = evaluation.dir_at_fpir(scores, predicted, truth, fpir)
    known_mask = np.array([t is not None for t in truth])
    report["rank1_acc"] = float(np.mean(np.array(predicted)[known_mask] == np.array(truth, dtype=object)[known_mask]))
    report["threshold"] = float(threshold)
    report["pair_threshold"] = float(gallery.meta.threshold)
    if known_embeddings and len(gallery.people) >= 2:
        # Closed set, as the original project did: classifiers fitted on the enrolled embeddings.
        names, rows = gallery.rows()
        probes, labels = np.concatenate(known_embeddings), [t for t in truth if t is not None]
        closed = evaluation.classifier_accuracy(rows, names, probes, labels)
        report["svm_acc"], report["knn_acc"] = closed["svm_acc"], closed["knn_acc"]
    return report
