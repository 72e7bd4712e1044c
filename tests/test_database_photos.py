"""gallery.py enroll into people.db, then recognize: the same names as from an .npz gallery and from PostgreSQL.

The fast test runs the toy detector and embedder of tests/test_recognition.py on generated
pictures; the slow one runs dlib's network and the Haar detector on real LFW photos composed into
group pictures (skipped without ../shared/data or dlib's .dat files). PostgreSQL runs where it is
installed (a throw-away server).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from facetorch.cli import gallery as gallery_cli
from facetorch.recognition import open_gallery
from facetorch.recognition.gallery import Gallery, GalleryMeta
from tests.conftest import SHARED_DATA, read_csv
from tests.postgres_server import PostgresServer, postgres_binaries
from tests.test_recognition import (
    COLOURS,
    STRANGER,
    ColourEmbedder,
    SquareDetector,
    needs_models,
    people_folder,
    picture,
    write_rgb,
)

SHARED = Path(os.environ.get("FACETORCH_SHARED_DATA", SHARED_DATA))


def as_npz(database: Path, target: Path) -> None:
    """The .npz gallery facetorch 0.1 would have written for the same enrolment (names, files, rows, settings)."""
    with open_gallery(database) as gallery:
        meta = gallery.meta
        names, files, rows = [], [], []
        for part_names, part_files, part_rows in gallery.store.records():
            names += part_names
            files += part_files
            rows.append(part_rows)
    meta_npz = GalleryMeta(meta.model_fingerprint, meta.threshold, names=names, files=files, open_set_fpir=meta.open_set_fpir,
                           open_set_threshold=meta.open_set_threshold, model=meta.model, detector=meta.detector,
                           alignment=meta.alignment)  # fmt: skip
    Gallery(np.concatenate(rows), meta_npz).save(target)


def recognized(gallery: str, source: Path, output: Path, extra: list[str]) -> list[tuple[str, str]]:
    gallery_cli.gallery(["recognize", "--gallery", gallery, "--source", str(source), "--output", str(output), "--quiet",
                         *extra])  # fmt: skip
    return [(Path(row["source"]).name, row["name"]) for row in read_csv(output / "recognitions.csv")]


def same_names_from_every_store(database: Path, scenes: Path, work: Path, extra: list[str]) -> list[tuple[str, str]]:
    """Names from people.db, from its .npz twin and (where PostgreSQL is installed) from a migrated copy: all equal."""
    as_npz(database, work / "people.npz")
    names = recognized(str(database), scenes, work / "from_db", extra)
    assert recognized(str(work / "people.npz"), scenes, work / "from_npz", extra) == names
    if postgres_binaries() is not None:
        server = PostgresServer().start()
        try:
            url = server.new_database()
            gallery_cli.gallery(["migrate", "--gallery", str(database), "--to", url])
            assert recognized(url, scenes, work / "from_postgres", extra) == names
        finally:
            server.stop()
    return names


def test_the_same_names_from_sqlite_npz_and_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())
    people, database = people_folder(tmp_path / "people"), tmp_path / "people.db"
    gallery_cli.gallery(["enroll", "--images", str(people), "--gallery", str(database), "--quiet"])
    scenes = tmp_path / "scenes"
    for i, colour in enumerate([*COLOURS.values(), STRANGER]):
        write_rgb(scenes / f"{i}.png", picture([(colour, 5, 5, 30), (COLOURS["red"], 60, 40, 30 + i)]))
    names = same_names_from_every_store(database, scenes, tmp_path, ["--threshold", "0.95"])
    assert [name for _, name in names] == ["red", "red", "green", "red", "blue", "red", "unknown", "red"]
    capsys.readouterr()


@pytest.mark.slow
@needs_models
@pytest.mark.skipif(not (SHARED / "lfw_devtrain" / "images").is_dir(), reason="../shared/data is absent")
def test_real_photos_give_the_same_names_from_every_store(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FACETORCH_HOME", str(tmp_path / "home"))
    lfw = tmp_path / "lfw"
    for person in sorted((SHARED / "lfw_devtrain" / "images").iterdir())[:8]:
        (lfw / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:3]:
            (lfw / person.name / photo.name).write_bytes(photo.read_bytes())
    gallery_cli.gallery(["compose", "--lfw", str(lfw), "--people", "5", "--per_person", "1", "--scenes", "3",
                         "--output", str(tmp_path / "set")])  # fmt: skip
    config = str(Path(__file__).resolve().parents[1] / "configs" / "embedding_dlib.yaml")
    database = tmp_path / "people.db"
    gallery_cli.gallery(["enroll", "--config", config, "--images", str(tmp_path / "set" / "enrol"), "--gallery",
                         str(database), "--detector", "haar", "--quiet"])  # fmt: skip
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["added"] == 5
    names = same_names_from_every_store(database, tmp_path / "set" / "scenes", tmp_path, [])
    assert any(name != "unknown" for _, name in names)
