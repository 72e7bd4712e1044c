"""The face database: one gallery interface over SQLite and read-only .npz stores, the index behind it, and the CLI.

PostgreSQL runs the same contract in tests/test_database_postgres.py; two processes and kill -9
in tests/test_database_crash.py. Embeddings are synthetic, clustered as a face network's are
(facetorch.bench.face_vectors).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from facetorch.bench.face_vectors import FaceVectors
from facetorch.cli import gallery as gallery_cli
from facetorch.recognition import open_gallery
from facetorch.recognition.database import FaceGallery
from facetorch.recognition.gallery import Gallery, GalleryError, GalleryMeta
from facetorch.recognition.stores.base import NoGalleryError
from tests.conftest import expect_warning
from tests.test_recognition import error_line

FINGERPRINT = "face-model-0001"
FACES = FaceVectors(dim=128, seed=7)


def people_rows(people: int, per_person: int = 2, start: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """Names, embeddings and file keys of ``people`` synthetic people (person-major)."""
    ids = np.arange(start, start + people)
    rows = FACES.images(ids, per_person)
    names = [f"person_{p:05d}" for p in np.repeat(ids, per_person)]
    files = [f"{name}/{i % per_person}.jpg" for i, name in enumerate(names)]
    return names, rows, files


def new_gallery(path: Path | str, people: int = 0, per_person: int = 2, **kwargs: object) -> FaceGallery:
    gallery = open_gallery(path, create=True, dim=128, fingerprint=FINGERPRINT, settings={"threshold": 0.6}, **kwargs)
    if people:
        gallery.add_many(*people_rows(people, per_person))
    return gallery


def same_answers(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> bool:
    """The same names, and the same scores to 1e-12 (float64 sums in another order differ in the last bits)."""
    return [n for n, _ in ours] == [n for n, _ in theirs] and np.allclose([s for _, s in ours], [s for _, s in theirs],
                                                                        rtol=0, atol=1e-12)  # fmt: skip


def legacy(names: list[str], rows: np.ndarray, files: list[str]) -> Gallery:
    return Gallery(rows, GalleryMeta(FINGERPRINT, threshold=0.6, names=list(names), files=list(files)))


# ---------------------------------------------------------------------------------------------- the contract


def test_the_contract_add_identify_remove_rename_and_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "people.db"
    with new_gallery(path) as gallery:
        assert (len(gallery), gallery.people) == (0, [])
        names, rows, files = people_rows(30)
        assert gallery.add_many(names, rows, files) == 60
        assert gallery.add("late", FACES.images([999], 3), ["late/0.jpg", "late/1.jpg", "late/2.jpg"]) == 3
        assert gallery.add("late", FACES.images([999], 1), ["late/0.jpg"]) == 0  # a file already enrolled is skipped
        assert (len(gallery), gallery.num_people, gallery.people[0], gallery.people[-1]) == (63, 31, "late", "person_00029")
        probes = FACES.images(np.arange(30), 1, shot=1)
        answers = gallery.identify(probes, threshold=0.0)  # 0 names every probe's best match
        assert [name for name, _ in answers] == [f"person_{p:05d}" for p in range(30)]
        # A person's score is the best of their images, in float64 as the .npz gallery computes it.
        best = (probes[:1].astype(np.float64) @ rows[:2].T.astype(np.float64)).max()
        assert answers[0][1] == pytest.approx(best, abs=1e-12)
        assert [name for name, _ in gallery.identify(probes[:2], threshold=1.01)] == ["unknown", "unknown"]
        assert gallery.remove("person_00001") == 2
        gallery.rename("person_00002", "Ada Lovelace")
        names_now = [name for name, _ in gallery.identify(probes[:3], threshold=0.0)]
        assert names_now[0] == "person_00000" and names_now[1] != "person_00001" and names_now[2] == "Ada Lovelace"
        assert gallery.remove_file("late/0.jpg") == "late" and dict(gallery.counts())["late"] == 2
        threshold = gallery.calibrate_open_set()  # 30 people, no twins: no warning (warnings fail the tests)
        assert 0.8 < threshold < 1.0 and gallery.default_threshold() == threshold
    with open_gallery(path) as again:  # everything was stored, threshold included
        assert (len(again), again.num_people) == (60, 30) and "Ada Lovelace" in again.people
        assert again.meta.open_set_threshold == threshold and again.meta.calibrated_people == 30
        assert again.meta.threshold == 0.6 and again.meta.dim == 128 and again.meta.model_fingerprint == FINGERPRINT
        assert Path(str(path) + ".faiss").is_file()  # the index was kept beside the file


def test_sqlite_url_and_the_lazy_import(tmp_path: Path) -> None:
    from facetorch.recognition import open_gallery as lazily

    with lazily(f"sqlite:///{tmp_path / 'x.sqlite'}", create=True, dim=4, fingerprint="f") as gallery:
        gallery.add("a", np.eye(4, dtype=np.float32)[:1], ["a.jpg"])
    with open_gallery(tmp_path / "x.sqlite") as gallery:
        assert gallery.people == ["a"]


@pytest.mark.parametrize("people, per_person, exact_rows", [(60, 3, 65_536), (2_000, 2, 65_536), (300, 2, 100)])
def test_identify_and_calibration_match_the_npz_gallery(tmp_path: Path, people: int, per_person: int,
                                                         exact_rows: int) -> None:  # fmt: skip
    """Exact index: the same names, scores and open-set threshold as the .npz Gallery; HNSW (exact_rows=100) too here."""
    names, rows, files = people_rows(people, per_person)
    old = legacy(names, rows, files)
    with new_gallery(tmp_path / "g.db", exact_rows=exact_rows) as gallery:
        gallery.add_many(names, rows, files)
        assert gallery.index_info()["kind"] == ("flat" if exact_rows > len(rows) else "hnsw")
        probes = np.concatenate([FACES.images(np.arange(0, people, 7), 1, shot=1), FACES.images(np.arange(5000, 5020), 1)])
        ours, theirs = gallery.best_matches(probes), old.best_matches(probes)
        assert ours[0] == theirs[0]
        np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-12)
        assert gallery.calibrate_open_set() == pytest.approx(old.calibrate_open_set(), rel=0, abs=1e-12)


def test_twins_and_small_galleries_are_calibrated_as_the_npz_gallery_does(tmp_path: Path) -> None:
    names, rows, files = people_rows(40)
    names += ["person_00000_again"] * 2
    files += ["again/0.jpg", "again/1.jpg"]
    rows = np.concatenate([rows, rows[:2]])  # the same person under two names
    old = legacy(names, rows, files)
    with new_gallery(tmp_path / "g.db") as gallery:
        gallery.add_many(names, rows, files)
        with expect_warning(UserWarning, r"person_00000 and person_00000_again .* the same person under two names"):
            ours = gallery.calibrate_open_set()
        with expect_warning(UserWarning, "the same person under two names"):
            assert ours == pytest.approx(old.calibrate_open_set(), abs=1e-12)
    with new_gallery(tmp_path / "two.db", people=2) as two:
        with expect_warning(UserWarning, r"2 persons: no open-set threshold .* pair threshold 0.6"):
            assert np.isnan(two.calibrate_open_set())
        assert two.default_threshold() == 0.6


# ---------------------------------------------------------------------------------------------- the index


def test_a_reader_sees_another_handles_changes_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with new_gallery(path, people=20) as writer, open_gallery(path) as reader:
        probe = FACES.images([500], 1, shot=1)
        assert reader.identify(probe, threshold=0.0)[0][0] != "newcomer"
        writer.add("newcomer", FACES.images([500], 2), ["n/0.jpg", "n/1.jpg"])
        assert reader.identify(probe, threshold=0.0)[0][0] == "newcomer"  # the version counter moved: caught up
        writer.rename("newcomer", "known")
        assert reader.identify(probe, threshold=0.0)[0][0] == "known"
        writer.remove("known")
        assert reader.identify(probe, threshold=0.0)[0][0] != "known"


def test_the_index_file_never_disagrees_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    index_file = Path(str(path) + ".faiss")
    with new_gallery(path, people=50, exact_rows=60) as gallery:  # a graph index, kept on close
        gallery.refresh()
    kept = index_file.read_bytes()
    with open_gallery(path, exact_rows=60) as gallery:  # changes after the index was written: caught up from the log
        gallery.add("newcomer", FACES.images([700], 2), ["n/0.jpg", "n/1.jpg"])
        gallery.remove("person_00003")
    index_file.write_bytes(kept)  # an index older than the store (as after a crash before it was saved)
    probe = FACES.images([700, 3], 1, shot=1)
    with open_gallery(path, exact_rows=60) as gallery:
        assert [n for n, _ in gallery.identify(probe, 0.0)][0] == "newcomer"
        assert gallery.identify(probe, 0.0)[1][0] != "person_00003" and len(gallery.refresh()) == len(gallery) == 100
    index_file.write_bytes(kept[: len(kept) // 2])  # a torn file: rebuilt
    with open_gallery(path, exact_rows=60) as gallery:
        assert len(gallery.refresh()) == 100 and gallery.identify(probe, 0.0)[0][0] == "newcomer"
    other = tmp_path / "other.db"
    new_gallery(other, people=5).close()
    Path(str(other) + ".faiss").write_bytes(index_file.read_bytes())  # another store's index: refused by its uid
    with open_gallery(other) as gallery:
        assert len(gallery.refresh()) == 10


def test_a_graph_index_marks_removed_rows_and_is_rebuilt_when_many_go(tmp_path: Path) -> None:
    with new_gallery(tmp_path / "g.db", people=100, exact_rows=50) as gallery:
        index = gallery.refresh()
        assert index.describe()["kind"] == "hnsw"
        for person in range(5):
            gallery.remove(f"person_{person:05d}")
        assert gallery.refresh().describe()["removed_rows_held"] == 10
        assert all(name not in {f"person_{p:05d}" for p in range(5)}
                   for name, _ in gallery.identify(FACES.images(np.arange(5), 1, shot=1), 0.0))  # fmt: skip
        for person in range(5, 30):
            gallery.remove(f"person_{person:05d}")
        assert gallery.refresh().describe()["removed_rows_held"] == 0  # over a tenth gone: rebuilt
        assert len(gallery.refresh()) == 140


@pytest.mark.parametrize("exact_rows", [65_536, 50])
def test_the_index_holds_each_persons_rows_as_the_store_does(tmp_path: Path, exact_rows: int) -> None:
    """Identify re-ranks from the index's memory: every person's rows there are the store's, through every change."""

    def agree(gallery: FaceGallery) -> None:
        index = gallery.refresh()
        people = np.unique(index.person_of[index.person_of > 0])
        ours, theirs = index.rows_of_people(people), gallery.store.rows_of_people(people)
        assert sorted(zip(ours.ids.tolist(), ours.people.tolist())) == sorted(zip(theirs.ids.tolist(), theirs.people.tolist()))
        order_ours, order_theirs = np.argsort(ours.ids), np.argsort(theirs.ids)
        assert np.array_equal(ours.embeddings[order_ours], theirs.embeddings[order_theirs])

    path = tmp_path / "g.db"
    with new_gallery(path, people=40, exact_rows=exact_rows) as gallery:
        agree(gallery)  # the person sort made here
        names, rows, files = people_rows(3, 2, start=40)
        gallery.add_many(names, rows, files)
        gallery.add("person_00001", FACES.images(np.array([1]), 1, shot=3), ["person_00001/late.jpg"])  # a later image
        agree(gallery)  # rows added since the sort
        gone = gallery.store.person_ids(["person_00002"])["person_00002"]
        gallery.remove("person_00002")
        gallery.remove_file("person_00003/0.jpg")
        agree(gallery)
        assert len(gallery.refresh().rows_of_people(np.array([gone]))) == 0
        gallery.index_info()
        gallery.save_index()
    with open_gallery(path, exact_rows=exact_rows) as gallery:  # positions read again from the saved index
        agree(gallery)


def test_rows_added_to_a_graph_wait_beside_it_and_join_it_in_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New rows of a graph gallery go to an exact side index (no copy of the graph), searched and saved with it."""
    from facetorch.recognition import vector_index

    path, first, later = tmp_path / "g.db", people_rows(300, 2), people_rows(6, 2, start=300)
    old = legacy(first[0] + later[0], np.concatenate([first[1], later[1]]), first[2] + later[2])
    probes = np.concatenate([FACES.images(np.arange(290, 306), 1, shot=1), FACES.images(np.arange(5000, 5008), 1)])
    with new_gallery(path, people=300, exact_rows=100) as gallery:
        graph_rows = int(gallery.refresh().index.ntotal)
        gallery.add_many(*later)
        index = gallery.refresh()
        assert (index.describe()["recent_rows"], int(index.index.ntotal)) == (12, graph_rows)  # the graph untouched
        ours, theirs = gallery.best_matches(probes), old.best_matches(probes)
        assert ours[0] == theirs[0]
        np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-12)
        gallery.remove("person_00301")  # a waiting person leaves the side index at once
        assert gallery.refresh().describe()["recent_rows"] == 10
        gallery.save_index()
    with open_gallery(path, exact_rows=100) as gallery:  # saved and read back beside the graph
        assert gallery.refresh().describe()["recent_rows"] == 10
        assert "person_00301" not in {name for name, _ in gallery.identify(probes, 0.0)}
        monkeypatch.setattr(vector_index, "RECENT_ROWS", 12)
        gallery.add("person_00400", FACES.images(np.array([400]), 2), ["p400/0.jpg", "p400/1.jpg"])
        index = gallery.refresh()
        assert (index.describe()["recent_rows"], int(index.index.ntotal)) == (0, graph_rows + 12)  # joined the graph
        assert gallery.identify(FACES.images(np.array([400, 305]), 1, shot=1), 0.0)[0][0] == "person_00400"
        assert [n for n, _ in gallery.identify(FACES.images(np.array([305]), 1, shot=1), 0.0)] == ["person_00305"]


def test_with_a_gpu_a_graph_is_searched_as_an_exact_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss-gpu's flat index stands in for the graph's walk (here a CPU flat index plays the GPU): exact answers."""
    import faiss

    from facetorch.recognition import index_mirror, vector_index

    made = []
    monkeypatch.setattr(index_mirror, "gpu_flat_factory", lambda: lambda dim: made.append(dim) or faiss.IndexFlatIP(dim))
    monkeypatch.setattr(vector_index, "RECENT_ROWS", 6)
    first, later = people_rows(300, 2), people_rows(4, 2, start=300)
    old = legacy(first[0] + later[0], np.concatenate([first[1], later[1]]), first[2] + later[2])
    probes = np.concatenate([FACES.images(np.arange(0, 304, 3), 1, shot=1), FACES.images(np.arange(5000, 5010), 1)])
    with new_gallery(tmp_path / "g.db", people=300, exact_rows=100) as gallery:
        assert gallery.index_info()["search"] == "exact, on the GPU"
        gallery.add_many(*later)  # 8 rows: past RECENT_ROWS, they join the graph and the mirror copies them
        ours, theirs = gallery.best_matches(probes), old.best_matches(probes)
        assert ours[0] == theirs[0] and made == [128]
        np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-12)
        gallery.remove("person_00003")  # marked in the graph: passed over in the mirror's answers too
        assert "person_00003" not in {name for name, _ in gallery.identify(FACES.images(np.array([3]), 1, shot=1), 0.0)}


# ---------------------------------------------------------------------------------------------- .npz, migration


def test_an_npz_gallery_is_read_only_and_migrates(tmp_path: Path) -> None:
    names, rows, files = people_rows(40)
    old = legacy(names, rows, files)
    old.calibrate_open_set()
    old.meta.detector, old.meta.alignment, old.meta.model = "dlib_cnn", "five_point", "config:x.yaml"
    old.save(tmp_path / "old.npz")
    probes = FACES.images(np.arange(40), 1, shot=1)
    with open_gallery(tmp_path / "old.npz") as npz:
        assert same_answers(npz.identify(probes), old.identify(probes)) and npz.people == old.people
        with pytest.raises(GalleryError, match=r"read-only from facetorch 0.2.0; convert it with `gallery.py migrate"):
            npz.add("x", probes[:1], ["x.jpg"])
    with pytest.raises(GalleryError, match=r"new galleries are SQLite files .* give '.*new.db'"):
        open_gallery(tmp_path / "new.npz", create=True, dim=128, fingerprint=FINGERPRINT)
    summary = gallery_cli.gallery(["migrate", "--gallery", str(tmp_path / "old.npz"), "--to", str(tmp_path / "new.db")])
    assert (summary["people"], summary["rows"]) == (40, 80)
    with open_gallery(tmp_path / "new.db") as new:
        assert same_answers(new.identify(probes), old.identify(probes))
        assert (new.meta.detector, new.meta.alignment, new.meta.model) == ("dlib_cnn", "five_point", "config:x.yaml")
        assert new.meta.open_set_threshold == old.meta.open_set_threshold
    with pytest.raises(GalleryError, match="already holds 40 people: migrate into a new gallery"):
        gallery_cli.gallery(["migrate", "--gallery", str(tmp_path / "old.npz"), "--to", str(tmp_path / "new.db")])


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.close()
    line = error_line(["list", "--gallery", str(other)], capsys)
    assert "is an SQLite database but not a facetorch gallery (its tables: invoices)" in line
    (tmp_path / "text.db").write_text("name,embedding\n")
    assert "is not an SQLite database" in error_line(["list", "--gallery", str(tmp_path / "text.db")], capsys)
    assert "does not exist; create it with `gallery.py enroll`" in error_line(["list", "--gallery", str(tmp_path / "no.db")],
                                                                              capsys)  # fmt: skip
    assert "expected a gallery file ending in .db" in error_line(["list", "--gallery", str(tmp_path / "g.txt")], capsys)
    path = tmp_path / "g.db"
    new_gallery(path, people=3).close()
    with pytest.raises(GalleryError, match=r"made by another model \(fingerprint face-model-0001\)"):
        open_gallery(path, fingerprint="another-model")
    assert "holds no person named 'nobody' (3 people" in error_line(["remove", "--gallery", str(path), "--name", "nobody"],
                                                                     capsys)  # fmt: skip
    line = error_line(["rename", "--gallery", str(path), "--name", "person_00000", "--to", "person_00001"], capsys)
    assert "already holds 'person_00001'" in line
    line = error_line(["rename", "--gallery", str(path), "--name", "person_00000", "--to", "../etc"], capsys)
    assert "must not hold a path separator" in line
    with open_gallery(path) as gallery:
        for bad, what in (("a/b", "path separator"), ("tab\there", "control characters"), ("unknown", "for a stranger"),
                          ("", "must not be empty"), (" x", "spaces")):  # fmt: skip
            with pytest.raises(ValueError, match=what):
                gallery.add(bad, FACES.images([1], 1), ["f.jpg"])
        with pytest.raises(GalleryError, match=r"expected 1 embedding rows of 128 numbers .* got shape \(1, 16\)"):
            gallery.add("x", np.ones((1, 16), np.float32), ["f.jpg"])
        with pytest.raises(GalleryError, match="not finite"):
            gallery.add("x", np.full((1, 128), np.nan, np.float32), ["f.jpg"])
        assert gallery.people == ["person_00000", "person_00001", "person_00002"]  # nothing was lost
    line = error_line(["list", "--gallery", "postgresql://postgres@/nowhere?host=/nonexistent&connect_timeout=2"], capsys)
    assert "does not answer" in line
    line = error_line(["list", "--gallery", "postgresql://me:secret@/nowhere?host=/nonexistent"], capsys)
    assert "secret" not in line and "me:***@" in line


def test_an_empty_sqlite_database_is_no_gallery_yet(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with pytest.raises(FileNotFoundError):  # 0 bytes: nothing there yet
        open_gallery(path)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    with pytest.raises(NoGalleryError, match="holds no facetorch gallery"):
        open_gallery(path)
    new_gallery(path, people=1).close()  # enrolment makes one there


# ---------------------------------------------------------------------------------------------- the command


def test_list_remove_rename_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = str(tmp_path / "g.db")
    new_gallery(path, people=4).close()
    capsys.readouterr()
    gallery_cli.gallery(["list", "--gallery", path])
    assert capsys.readouterr().out.splitlines() == ["name,images", *[f"person_0000{i},2" for i in range(4)]]
    gallery_cli.gallery(["rename", "--gallery", path, "--name", "person_00000", "--to", "Grace Hopper"])
    assert json.loads(capsys.readouterr().out) == {"renamed": "person_00000", "to": "Grace Hopper", "people": 4}
    gallery_cli.gallery(["remove", "--gallery", path, "--file", "person_00001/0.jpg"])
    assert json.loads(capsys.readouterr().out)["of"] == "person_00001"
    gallery_cli.gallery(["remove", "--gallery", path, "--name", "person_00002"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["removed"], summary["images"], summary["people"], summary["rows"]) == ("person_00002", 2, 3, 5)
    gallery_cli.gallery(["list", "--gallery", path, "--output", str(tmp_path / "people.csv")])
    assert (tmp_path / "people.csv").read_text().splitlines()[1:] == ["Grace Hopper,2", "person_00001,1", "person_00003,2"]


def test_enrolling_into_a_new_npz_is_refused_before_any_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "people" / "a").mkdir(parents=True)
    line = error_line(["enroll", "--images", str(tmp_path / "people"), "--gallery", str(tmp_path / "people.npz")], capsys)
    assert "new galleries are SQLite files from facetorch 0.2.0" in line and "people.db" in line
