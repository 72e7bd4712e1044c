"""The face database on PostgreSQL: the same contract as SQLite, a database shared by processes, the same names.

A throw-away server (tests/postgres_server.py: initdb + pg_ctl on a Unix socket, as the postgres
user under root) starts once for this module; each test gets a fresh database. Skipped only where
no PostgreSQL is installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facetorch.recognition import open_gallery
from tests.postgres_server import PostgresServer, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.test_database import FACES, FINGERPRINT, legacy, people_rows


@pytest.fixture
def url(postgres_url: str) -> str:  # noqa: F811 (the fixture above, by a short name)
    return postgres_url


def test_the_contract_on_postgresql_matches_the_npz_gallery(url: str) -> None:
    names, rows, files = people_rows(200)
    old = legacy(names, rows, files)
    probes = np.concatenate([FACES.images(np.arange(0, 200, 5), 1, shot=1), FACES.images(np.arange(900, 910), 1)])
    with open_gallery(url, create=True, dim=128, fingerprint=FINGERPRINT, settings={"threshold": 0.6}) as gallery:
        assert gallery.add_many(names, rows, files) == 400 and gallery.add_many(names, rows, files) == 0
        assert (len(gallery), gallery.num_people) == (400, 200)
        ours, theirs = gallery.best_matches(probes), old.best_matches(probes)
        assert ours[0] == theirs[0]
        np.testing.assert_allclose(ours[1], theirs[1], atol=1e-12)
        assert gallery.calibrate_open_set() == pytest.approx(old.calibrate_open_set(), abs=1e-12)
        gallery.rename("person_00000", "Ada")
        assert gallery.remove("person_00005") == 2
        assert gallery.remove_file("person_00010/0.jpg") == "person_00010"
        answers = [name for name, _ in gallery.identify(probes[:3], threshold=0.0)]
        assert answers[0] == "Ada" and answers[1] != "person_00005" and answers[2] == "person_00010"
    with open_gallery(url) as again:
        assert (len(again), again.num_people, again.meta.threshold) == (397, 199, 0.6)
        assert dict(again.counts())["person_00010"] == 1 and np.isfinite(again.meta.open_set_threshold)


def test_a_reader_sees_another_processs_people_without_a_restart(url: str) -> None:
    with open_gallery(url, create=True, dim=128, fingerprint=FINGERPRINT) as reader:
        reader.add_many(*people_rows(10))
        probe = FACES.images([321], 1, shot=1)
        assert reader.identify(probe, 0.0)[0][0] != "newcomer"
        subprocess.run([sys.executable, "-c", ENROL_ONE, url], check=True, timeout=120, cwd=Path(__file__).parents[1])
        assert reader.identify(probe, 0.0)[0][0] == "newcomer"


ENROL_ONE = """
import sys
from facetorch.recognition import open_gallery
from tests.test_database import FACES
with open_gallery(sys.argv[1]) as gallery:
    gallery.add("newcomer", FACES.images([321], 2), ["n/0.jpg", "n/1.jpg"])
"""


def test_a_database_that_is_no_gallery_and_a_server_that_does_not_answer(
    url: str, postgres_server: PostgresServer  # noqa: F811 (a fixture)
) -> None:
    from facetorch.recognition.stores.base import NoGalleryError

    with pytest.raises(NoGalleryError, match="holds no facetorch gallery"):
        open_gallery(url)
    missing = postgres_server.url("no_such_database")
    with pytest.raises(ValueError, match=r"does not answer: .*no_such_database"):
        open_gallery(missing)
