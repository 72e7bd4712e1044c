"""The threshold a track's mean embedding is matched at: calibrated as the gallery's, with two-face means as strangers."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from facetorch import evaluation
from facetorch.bench.face_vectors import FaceVectors
from facetorch.recognition.evidence import NameEvidence
from facetorch.recognition.gallery import Gallery, GalleryMeta
from facetorch.recognition.pipeline import OpenSetMatcher, SvmMatcher
from facetorch.recognition.track_threshold import mean_threshold, track_rule


def population(people: int = 60, per_person: int = 3, seed: int = 0) -> tuple[list[str], np.ndarray, FaceVectors]:
    faces = FaceVectors(seed=seed)
    rows = faces.images(np.arange(people), per_person).astype(np.float64)
    return [f"p{p}" for p in range(people) for _ in range(per_person)], rows, faces


def test_the_mean_threshold_is_the_gallery_calibration_with_two_face_means_as_strangers() -> None:
    names, rows, _ = population(people=12)
    expected = []
    for person in dict.fromkeys(names):
        own = np.array([n == person for n in names])
        for a, b in itertools.combinations(np.flatnonzero(own), 2):
            mean = (rows[a] + rows[b]) / np.linalg.norm(rows[a] + rows[b])
            expected.append(float((rows[~own] @ mean).max()))
    assert mean_threshold(names, rows, 0.05) == pytest.approx(evaluation.fpir_threshold(expected, 0.05), abs=1e-12)
    assert mean_threshold(["a", "a", "b", "b", "c"], rows[:5], 0.05) is None  # two people of two faces: nothing to calibrate


def test_strangers_means_pass_the_single_face_threshold_too_often_and_the_mean_threshold_as_often_as_asked() -> None:
    names, rows, faces = population(people=300, per_person=3)
    gallery_names = np.array(names)
    single = []
    for person in dict.fromkeys(names):
        own = gallery_names == person
        single.extend((rows[own] @ rows[~own].T).max(axis=1).tolist())
    single_threshold = evaluation.fpir_threshold(single, 0.05)
    threshold = mean_threshold(names, rows, 0.05)
    assert threshold is not None and threshold > single_threshold
    strangers = faces.images(np.arange(1000, 1600), 2, shot=1).astype(np.float64)  # two photos of 600 new people
    means = strangers[0::2] + strangers[1::2]
    best = (means / np.linalg.norm(means, axis=1, keepdims=True) @ rows.T).max(axis=1)
    assert (best >= single_threshold).mean() > 0.1  # twice the 5% asked, and more
    assert (best >= threshold).mean() < 0.09


def test_the_rule_follows_the_matcher() -> None:
    names, rows, _ = population(people=100)
    meta = GalleryMeta("fingerprint", threshold=0.6, names=names, files=[f"{n}/{i}.jpg" for i, n in enumerate(names)])
    gallery = Gallery(np.asarray(rows, np.float32), meta)
    gallery.calibrate_open_set()
    calibrated = track_rule(OpenSetMatcher(gallery))
    assert calibrated.rule == "mean" and calibrated.threshold > calibrated.single == gallery.default_threshold()
    evidence = NameEvidence(threshold=0.0)
    evidence.add(rows[0], 1.0)
    assert calibrated.threshold_for(evidence) == calibrated.single  # one face is a single face
    evidence.add(rows[1], 1.0)
    assert calibrated.threshold_for(evidence) == calibrated.threshold
    assert calibrated.match(OpenSetMatcher(gallery), [evidence])[0][0] == "p0"
    assert track_rule(OpenSetMatcher(gallery, threshold=0.9)).rule == "average"  # --threshold: chosen for single faces
    assert track_rule(SimpleNamespace(kind=SvmMatcher.kind, threshold=0.5)).rule == "classifier"  # the SVM's probabilities
