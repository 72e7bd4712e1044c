"""The SQL that SQLite and PostgreSQL galleries share: one schema, one way to write, one change log.

Tables (the ``gallery_`` prefix keeps them apart from an application's own tables in a shared
database): ``gallery_schema`` (the schema version), ``gallery_settings`` (key -> JSON value),
``gallery_state`` (one row: the version counter, the store's uid, people and row counts),
``gallery_people`` (id, name, version), ``gallery_images`` (id, person id, file key, float32
embedding as bytes, version) and ``gallery_removed`` (image ids removed, with the version).

Every write is one transaction that first bumps ``gallery_state.version``: the row lock that this
takes serialises writers (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` does it for the file), so
versions commit in order and a reader that saw version V has seen every change up to V. The
counts live in ``gallery_state`` so that ``len()`` and the number of people cost one row.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.stores.base import GallerySettings, NoGalleryError, Rows, Store, check_name, group_rows

__all__ = ["SCHEMA_VERSION", "SqlStore"]

SCHEMA_VERSION = 1
TABLES = ("gallery_schema", "gallery_settings", "gallery_state", "gallery_people", "gallery_images", "gallery_removed")


class SqlStore(Store):
    """A gallery in SQL tables; subclasses give the connection, the transactions and the dialect.

    Subclasses set ``IDENTITY`` (an id column's type), ``BLOB`` and ``PARAMETER`` (``?`` or ``%s``)
    and implement :meth:`_connect`, :meth:`_begin_write` and :meth:`_in` (a membership test against
    a list passed as one parameter).
    """

    IDENTITY = "INTEGER PRIMARY KEY AUTOINCREMENT"
    BLOB = "BLOB"
    PARAMETER = "?"

    def __init__(self, target: str) -> None:
        self.target = target
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._settings: tuple[int, GallerySettings] | None = None
        self.dim = 0

    # ------------------------------------------------------------------ dialect
    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _begin_write(self, cursor: Any) -> Iterator[None]:
        raise NotImplementedError
        yield

    @contextmanager
    def _begin_read(self, cursor: Any) -> Iterator[None]:
        yield

    def _in(self, column: str) -> str:
        raise NotImplementedError

    def _list(self, values: list[Any]) -> Any:
        raise NotImplementedError

    def _table_exists(self, cursor: Any, table: str) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ plumbing
    def _cursor(self) -> Any:
        """This thread's connection's cursor (one connection per thread: SQLite's rule, and psycopg's advice)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection.cursor()

    def _sql(self, text: str) -> str:
        return text if self.PARAMETER == "?" else text.replace("?", self.PARAMETER)

    def _run(self, cursor: Any, text: str, parameters: tuple = ()) -> Any:
        cursor.execute(self._sql(text), parameters)
        return cursor

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 (closing a connection of another thread that is gone: nothing left to do)
                pass
        self._local = threading.local()

    # ------------------------------------------------------------------ schema
    def _schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS gallery_schema (version INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS gallery_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS gallery_state (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL, "
            "uid TEXT NOT NULL, people_count BIGINT NOT NULL, row_count BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS gallery_people (id {self.IDENTITY}, name TEXT NOT NULL UNIQUE, "
            "version BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS gallery_images (id {self.IDENTITY}, person_id BIGINT NOT NULL "
            f"REFERENCES gallery_people(id), file TEXT NOT NULL UNIQUE, embedding {self.BLOB} NOT NULL, "
            "version BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS gallery_images_person ON gallery_images (person_id)",
            "CREATE INDEX IF NOT EXISTS gallery_images_version ON gallery_images (version, id)",
            "CREATE TABLE IF NOT EXISTS gallery_removed (image_id BIGINT PRIMARY KEY, version BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS gallery_removed_version ON gallery_removed (version)",
        ]

    def _create(self, cursor: Any, settings: GallerySettings) -> None:
        """Make the tables and store ``settings`` (inside the caller's write transaction)."""
        for statement in self._schema():
            self._run(cursor, statement)
        self._run(cursor, "INSERT INTO gallery_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        self._run(cursor, "INSERT INTO gallery_state (id, version, uid, people_count, row_count) VALUES (1, 0, ?, 0, 0)",
                  (uuid.uuid4().hex,))  # fmt: skip
        for key, value in settings.to_record().items():
            self._run(cursor, "INSERT INTO gallery_settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def _open(self, create: bool, settings: GallerySettings | None, not_a_gallery: str) -> None:
        """Check the schema (making it first when ``create`` and there is none); read the uid and the settings.

        Every connection is closed again when it fails.
        """
        try:
            self._check_schema(create, settings, not_a_gallery)
        except BaseException:
            self.close()
            raise

    def _check_schema(self, create: bool, settings: GallerySettings | None, not_a_gallery: str) -> None:
        cursor = self._cursor()
        if not self._table_exists(cursor, "gallery_schema"):
            if not create or settings is None:
                raise NoGalleryError(not_a_gallery)
            with self._begin_write(cursor):
                if not self._table_exists(cursor, "gallery_schema"):  # another process may have made it meanwhile
                    self._create(cursor, settings)
        version = self._run(cursor, "SELECT version FROM gallery_schema").fetchone()
        if version is None or version[0] != SCHEMA_VERSION:
            raise GalleryError(f"{self.target}: gallery schema {version[0] if version else None!r}; this facetorch reads "
                               f"schema {SCHEMA_VERSION} (written by another version? migrate or enrol again)")  # fmt: skip
        self.uid = str(self._run(cursor, "SELECT uid FROM gallery_state WHERE id = 1").fetchone()[0])
        self.dim = self.settings().dim

    # ------------------------------------------------------------------ reads
    def version(self) -> int:
        """The committed version counter."""
        return int(self._run(self._cursor(), "SELECT version FROM gallery_state WHERE id = 1").fetchone()[0])

    def settings(self) -> GallerySettings:
        """The stored settings (read again only when the version moved)."""
        cursor = self._cursor()
        with self._begin_read(cursor):
            version = int(self._run(cursor, "SELECT version FROM gallery_state WHERE id = 1").fetchone()[0])
            cached = self._settings
            if cached is not None and cached[0] == version:
                return cached[1]
            rows = self._run(cursor, "SELECT key, value FROM gallery_settings").fetchall()
        try:
            record = {str(key): json.loads(value) for key, value in rows}
        except (TypeError, ValueError) as error:
            raise GalleryError(f"{self.target}: a gallery setting is not JSON ({error}); the store is damaged") from error
        settings = GallerySettings.from_record(record, self.target)
        self._settings = (version, settings)
        return settings

    def num_people(self) -> int:
        """People enrolled (a counter, not a count)."""
        return int(self._run(self._cursor(), "SELECT people_count FROM gallery_state WHERE id = 1").fetchone()[0])

    def num_rows(self) -> int:
        """Rows enrolled (a counter, not a count)."""
        return int(self._run(self._cursor(), "SELECT row_count FROM gallery_state WHERE id = 1").fetchone()[0])

    def counts(self) -> list[tuple[str, int]]:
        """(name, images) of every person, sorted by name."""
        rows = self._run(self._cursor(), "SELECT p.name, count(i.id) FROM gallery_people p LEFT JOIN gallery_images i "
                                         "ON i.person_id = p.id GROUP BY p.id, p.name ORDER BY p.name").fetchall()  # fmt: skip
        return [(str(name), int(count)) for name, count in rows]

    def _rows(self, records: list[tuple]) -> Rows:
        if not records:
            return Rows.empty(self.dim)
        ids, people, blobs = zip(*records)
        embeddings = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype="<f4").reshape(len(records), self.dim)
        return Rows(np.array(ids, np.int64), np.array(people, np.int64), embeddings.astype(np.float32))

    def all_rows(self, chunk: int = 65536) -> Iterator[Rows]:
        """Every row in id order, ``chunk`` rows at a time (keyset paging: no long-lived read)."""
        last = -1
        while True:
            records = self._run(self._cursor(), "SELECT id, person_id, embedding FROM gallery_images WHERE id > ? "
                                                "ORDER BY id LIMIT ?", (last, chunk)).fetchall()  # fmt: skip
            if not records:
                return
            rows = self._rows(records)
            last = int(rows.ids[-1])
            yield rows

    def records(self, chunk: int = 65536) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
        """Every row as (names, file keys, embeddings), ``chunk`` at a time in id order."""
        last = -1
        while True:
            found = self._run(self._cursor(), "SELECT i.id, p.name, i.file, i.embedding FROM gallery_images i JOIN "
                                              "gallery_people p ON p.id = i.person_id WHERE i.id > ? ORDER BY i.id LIMIT ?",
                              (last, chunk)).fetchall()  # fmt: skip
            if not found:
                return
            last = int(found[-1][0])
            rows = self._rows([(r[0], 0, r[3]) for r in found])
            yield [str(r[1]) for r in found], [str(r[2]) for r in found], rows.embeddings

    def changes_since(self, version: int) -> tuple[Iterator[Rows], np.ndarray, int]:
        """Rows added after ``version`` (still there, a page at a time), ids removed after it, and the version reached.

        The version and the removals are read in one snapshot; the added rows are paged by (version, id)
        up to that version, so a reader catching up with a million new rows never holds them all at once.
        """
        cursor = self._cursor()
        with self._begin_read(cursor):
            now = int(self._run(cursor, "SELECT version FROM gallery_state WHERE id = 1").fetchone()[0])
            if now <= version:  # nothing new (or the store went back: the caller rebuilds)
                return iter(()), np.empty(0, np.int64), now
            removed = self._run(cursor, "SELECT image_id FROM gallery_removed WHERE version > ? AND version <= ?",
                                (version, now)).fetchall()  # fmt: skip
        return self._added(version, now), np.array([r[0] for r in removed], np.int64), now

    def _added(self, version: int, now: int, page: int = 65536) -> Iterator[Rows]:
        last = (version, -1)
        while True:
            found = self._run(self._cursor(), "SELECT id, person_id, embedding, version FROM gallery_images WHERE "
                                              "(version, id) > (?, ?) AND version <= ? ORDER BY version, id LIMIT ?",
                              (*last, now, page)).fetchall()  # fmt: skip
            if not found:
                return
            last = (int(found[-1][3]), int(found[-1][0]))
            yield self._rows([r[:3] for r in found])

    def rows_of_people(self, person_ids: np.ndarray) -> Rows:
        """Every row of these people."""
        wanted = sorted({int(p) for p in np.asarray(person_ids).ravel()})
        if not wanted:
            return Rows.empty(self.dim)
        records = self._run(self._cursor(), f"SELECT id, person_id, embedding FROM gallery_images WHERE "
                                            f"{self._in('person_id')}", (self._list(wanted),)).fetchall()  # fmt: skip
        return self._rows(records)

    def names_of(self, person_ids: np.ndarray) -> dict[int, str]:
        """{person id: name}."""
        wanted = sorted({int(p) for p in np.asarray(person_ids).ravel()})
        if not wanted:
            return {}
        records = self._run(self._cursor(), f"SELECT id, name FROM gallery_people WHERE {self._in('id')}",
                            (self._list(wanted),)).fetchall()  # fmt: skip
        return {int(i): str(name) for i, name in records}

    def person_ids(self, names: list[str]) -> dict[str, int]:
        """{name: person id} of the enrolled ones among ``names``."""
        if not names:
            return {}
        records = self._run(self._cursor(), f"SELECT name, id FROM gallery_people WHERE {self._in('name')}",
                            (self._list(list(names)),)).fetchall()  # fmt: skip
        return {str(name): int(i) for name, i in records}

    # ------------------------------------------------------------------ writes
    def _bump(self, cursor: Any, people: int = 0, rows: int = 0) -> int:
        """The next version (taking the state row's lock until commit) and the counters moved."""
        record = self._run(cursor, "UPDATE gallery_state SET version = version + 1, people_count = people_count + ?, "
                                   "row_count = row_count + ? WHERE id = 1 RETURNING version", (people, rows)).fetchone()
        return int(record[0])

    def update_settings(self, **changes: Any) -> GallerySettings:
        """Store ``changes`` in one transaction."""
        settings = self.settings().updated(**changes)
        record = settings.to_record()
        cursor = self._cursor()
        with self._begin_write(cursor):
            self._bump(cursor)
            for key in changes:
                self._run(cursor, "UPDATE gallery_settings SET value = ? WHERE key = ?", (json.dumps(record[key]), key))
                if cursor.rowcount == 0:
                    self._run(cursor, "INSERT INTO gallery_settings (key, value) VALUES (?, ?)", (key, json.dumps(record[key])))
        self._settings = None
        return settings

    def add(self, names: list[str], embeddings: np.ndarray, files: list[str]) -> int:
        """Add rows in one transaction; file keys already enrolled (or repeated) are skipped."""
        embeddings = np.ascontiguousarray(embeddings, dtype="<f4")
        groups = group_rows(names, embeddings, files)
        cursor = self._cursor()
        with self._begin_write(cursor):
            known_files = {r[0] for r in self._run(cursor, f"SELECT file FROM gallery_images WHERE {self._in('file')}",
                                                   (self._list([k for _, ks in groups.values() for k in ks]),))}  # fmt: skip
            groups = {name: ([i for i, k in zip(rows, keys) if k not in known_files], [k for k in keys if k not in known_files])
                      for name, (rows, keys) in groups.items()}  # fmt: skip
            groups = {name: group for name, group in groups.items() if group[0]}
            if not groups:
                return 0
            ids = self.person_ids_in(cursor, list(groups))
            new = [name for name in groups if name not in ids]
            added = sum(len(rows) for rows, _ in groups.values())
            version = self._bump(cursor, people=len(new), rows=added)
            if new:
                cursor.executemany(self._sql("INSERT INTO gallery_people (name, version) VALUES (?, ?)"),
                                   [(name, version) for name in new])  # fmt: skip
                ids.update(self.person_ids_in(cursor, new))
            cursor.executemany(
                self._sql("INSERT INTO gallery_images (person_id, file, embedding, version) VALUES (?, ?, ?, ?)"),
                [(ids[name], key, embeddings[i].tobytes(), version)
                 for name, (rows, keys) in groups.items() for i, key in zip(rows, keys)],
            )  # fmt: skip
        return added

    def person_ids_in(self, cursor: Any, names: list[str]) -> dict[str, int]:
        """{name: id} of the enrolled ones among ``names``, inside the caller's transaction."""
        records = self._run(cursor, f"SELECT name, id FROM gallery_people WHERE {self._in('name')}", (self._list(names),))
        return {str(name): int(i) for name, i in records.fetchall()}

    def _forget(self, cursor: Any, version: int, image_ids: list[int]) -> None:
        cursor.executemany(self._sql("INSERT INTO gallery_removed (image_id, version) VALUES (?, ?)"),
                           [(i, version) for i in image_ids])  # fmt: skip

    def remove_person(self, name: str) -> int:
        """Remove ``name`` and their rows (O(their rows))."""
        cursor = self._cursor()
        with self._begin_write(cursor):
            record = self._run(cursor, "SELECT id FROM gallery_people WHERE name = ?", (name,)).fetchone()
            if record is None:
                raise KeyError(self._no_person(name))
            person = int(record[0])
            images = [int(r[0]) for r in self._run(cursor, "SELECT id FROM gallery_images WHERE person_id = ?",
                                                   (person,)).fetchall()]  # fmt: skip
            version = self._bump(cursor, people=-1, rows=-len(images))
            self._forget(cursor, version, images)
            self._run(cursor, "DELETE FROM gallery_images WHERE person_id = ?", (person,))
            self._run(cursor, "DELETE FROM gallery_people WHERE id = ?", (person,))
        return len(images)

    def remove_file(self, file: str) -> str:
        """Remove one image by its file key; the person goes too when it was their last."""
        cursor = self._cursor()
        with self._begin_write(cursor):
            record = self._run(cursor, "SELECT i.id, p.id, p.name FROM gallery_images i JOIN gallery_people p ON "
                                       "p.id = i.person_id WHERE i.file = ?", (file,)).fetchone()  # fmt: skip
            if record is None:
                raise KeyError(f"{self.target} holds no image {file!r} (`gallery.py list` shows the people)")
            image, person, name = int(record[0]), int(record[1]), str(record[2])
            left = int(self._run(cursor, "SELECT count(*) FROM gallery_images WHERE person_id = ?", (person,)).fetchone()[0])
            version = self._bump(cursor, people=-1 if left == 1 else 0, rows=-1)
            self._forget(cursor, version, [image])
            self._run(cursor, "DELETE FROM gallery_images WHERE id = ?", (image,))
            if left == 1:
                self._run(cursor, "DELETE FROM gallery_people WHERE id = ?", (person,))
        return name

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` (one row)."""
        check_name(new, "new name")
        cursor = self._cursor()
        with self._begin_write(cursor):
            if self._run(cursor, "SELECT id FROM gallery_people WHERE name = ?", (new,)).fetchone() is not None:
                raise ValueError(f"{self.target} already holds {new!r}: remove that person first, or choose another name")
            version = self._bump(cursor)
            self._run(cursor, "UPDATE gallery_people SET name = ?, version = ? WHERE name = ?", (new, version, old))
            if cursor.rowcount != 1:
                raise KeyError(self._no_person(old))

    def _no_person(self, name: str) -> str:
        return f"{self.target} holds no person named {name!r} ({self.num_people()} people; `gallery.py list` shows them)"
