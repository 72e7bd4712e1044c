"""Two processes enrolling into one gallery lose nobody; kill -9 in the middle of a bulk enrolment loses no whole person.

Each writer runs in its own Python process (tests/test_database_crash.py's WORKER), as two
``gallery.py enroll`` runs or a service and a command would. SQLite and PostgreSQL (a throw-away
server, skipped where none is installed) alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from facetorch.recognition import open_gallery
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.test_database import FACES

pytestmark = pytest.mark.slow  # subprocesses (the project's slow marker)
REPO = Path(__file__).resolve().parents[1]
WORKER = """
import sys
import numpy as np
import pytest
from facetorch.recognition import database, open_gallery
from tests.test_database import FACES, FINGERPRINT
target, start, count, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
database.ADD_CHUNK = 20  # 10 people a transaction
ids = np.arange(start, start + count)
rows = FACES.images(ids, 2)
names = [f"person_{p:05d}" for p in np.repeat(ids, 2)]
files = [f"{name}/{i % 2}.jpg" for i, name in enumerate(names)]
with open_gallery(target, create=True, dim=128, fingerprint=FINGERPRINT) as gallery:
    print("open", flush=True)
    if mode == "one_by_one":
        for k in range(count):
            gallery.add(names[2 * k], rows[2 * k : 2 * k + 2], files[2 * k : 2 * k + 2])
    else:
        gallery.add_many(names, rows, files)
print("done", flush=True)
"""


def worker(target: str, start: int, count: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, target, str(start), str(count), mode], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def people_now(target: str) -> Optional[int]:
    """People committed so far (None before the gallery exists), read without facetorch."""
    try:
        if target.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(target, autocommit=True) as connection:
                return int(connection.execute("SELECT people_count FROM gallery_state").fetchone()[0])
        import sqlite3

        connection = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)
        try:
            return int(connection.execute("SELECT people_count FROM gallery_state").fetchone()[0])
        finally:
            connection.close()
    except Exception:  # noqa: BLE001 (not there yet: the worker is still starting)
        return None


def check_whole(target: str, expected: Optional[int] = None) -> int:
    """Every person has both images, the counters agree with the rows, and the gallery takes more; returns people."""
    with open_gallery(target) as gallery:
        counts = dict(gallery.counts())
        assert set(counts.values()) <= {2}, {k: v for k, v in counts.items() if v != 2}
        assert len(counts) == gallery.num_people and len(gallery) == 2 * len(counts)
        if expected is not None:
            assert len(counts) == expected
        assert len(gallery.refresh()) == len(gallery)  # the index agrees with the store
        gallery.add("after", FACES.images([9999], 2), ["after/0.jpg", "after/1.jpg"])
        assert gallery.identify(FACES.images([9999], 1, shot=1), 0.0)[0][0] == "after"
        return len(counts)


SLOW_CREATOR = """
import sys
import time
from facetorch.recognition import open_gallery
from facetorch.recognition.stores import sql
from tests.test_database import FINGERPRINT
make = sql.SqlStore._create
def make_slowly(store, cursor, settings):
    make(store, cursor, settings)
    time.sleep(0.5)  # holds the write lock while the others wait on it, so they all race the first one
sql.SqlStore._create = make_slowly
with open_gallery(sys.argv[1], create=True, dim=128, fingerprint=FINGERPRINT) as gallery:
    print(gallery.store.uid, flush=True)
"""


def first_openers_at_once(target: str, count: int = 4) -> None:
    """``count`` processes create the same gallery at once: one makes it, every one opens that one."""
    processes = [subprocess.Popen([sys.executable, "-c", SLOW_CREATOR, target], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(count)]  # fmt: skip
    uids = set()
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        uids.add(out.strip())
    assert len(uids) == 1, uids  # one gallery, made once
    check_whole(target, expected=0)


def two_writers(target: str) -> None:
    first, second = worker(target, 0, 120, "one_by_one"), worker(target, 1000, 120, "one_by_one")
    for process in (first, second):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    check_whole(target, expected=240)


def killed_in_the_middle(target: str) -> None:
    process = worker(target, 0, 4000, "bulk")
    try:
        deadline = time.monotonic() + 300
        while (people_now(target) or 0) < 10:  # the first transactions are in
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the worker enrolled nobody in 5 minutes"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        out, _ = process.communicate(timeout=60)
    assert "done" not in out, "the worker finished before it was killed: nothing was tested"
    people = check_whole(target)
    assert 10 <= people < 4000 and people % 10 == 0  # whole transactions of 10 people, and only those


def test_two_processes_enrolling_into_one_sqlite_file_lose_nobody(tmp_path: Path) -> None:
    two_writers(str(tmp_path / "shared.db"))


def test_first_enrolments_at_once_make_one_sqlite_gallery(tmp_path: Path) -> None:
    first_openers_at_once(str(tmp_path / "new.db"))


def test_kill_9_in_a_bulk_enrolment_into_sqlite_keeps_whole_people(tmp_path: Path) -> None:
    killed_in_the_middle(str(tmp_path / "bulk.db"))


def test_two_processes_enrolling_into_one_postgresql_database_lose_nobody(postgres_url: str) -> None:  # noqa: F811
    two_writers(postgres_url)


def test_first_enrolments_at_once_make_one_postgresql_gallery(postgres_url: str) -> None:  # noqa: F811
    first_openers_at_once(postgres_url)  # to_regclass's stale catalog cache made it twice (CI, stop 29)


def test_kill_9_in_a_bulk_enrolment_into_postgresql_keeps_whole_people(postgres_url: str) -> None:  # noqa: F811
    killed_in_the_middle(postgres_url)


def test_workers_draw_the_same_faces_as_the_tests() -> None:
    assert np.array_equal(FACES.images([3], 2), FACES.images([3], 2))  # the worker's rows are the ones checked
