"""The embedded gallery: one SQLite file (the standard library's ``sqlite3``), the default for new galleries.

WAL mode lets readers go on while one process writes; a busy timeout makes a second writer wait
for the first instead of failing; each thread gets its own connection (SQLite's rule). Writes
take the file's write lock at their start (``BEGIN IMMEDIATE``), so two enrolling processes
queue up instead of deadlocking, and a write is whole or absent after a crash (``kill -9``).
The vector index is persisted beside the file (``<file>.faiss``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.stores.base import GallerySettings
from facetorch.recognition.stores.sql import SqlStore

__all__ = ["BUSY_TIMEOUT_S", "SQLiteStore", "sqlite_path"]

BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another's write lock
MAGIC = b"SQLite format 3\x00"
SQLITE_PREFIX = "sqlite:///"


def sqlite_path(target: str) -> Optional[Path]:
    """The file of ``sqlite:///PATH``, or None for another kind of target."""
    return Path(target[len(SQLITE_PREFIX):]) if target.startswith(SQLITE_PREFIX) else None


class SQLiteStore(SqlStore):
    """A gallery in one SQLite file.

    Args:
        path: The ``.db`` file.
        create: Make the gallery when the file does not exist (or is empty), with ``settings``.
        settings: The new gallery's settings.
        flag: The option that named the file, for messages.

    Raises:
        FileNotFoundError: no such file and not ``create``. IsADirectoryError: a folder.
        GalleryError: the file is not an SQLite database, or a database without a gallery in it.
    """

    def __init__(self, path: str | Path, create: bool = False, settings: Optional[GallerySettings] = None,
                 flag: str = "--gallery") -> None:  # fmt: skip
        self.path = Path(path)
        super().__init__(f"{flag} {str(self.path)!r}")
        self.index_path = str(self.path) + ".faiss"
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.target} is a folder; expected a gallery file (.db)")
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if not exists and not create:
            raise FileNotFoundError(f"{self.target} does not exist; create it with `gallery.py enroll`")
        if exists:
            with open(self.path, "rb") as handle:
                head = handle.read(len(MAGIC))
            if head != MAGIC:
                raise GalleryError(f"{self.target} is not an SQLite database (it starts with {head[:8]!r}); "
                                   "expected a gallery written by `gallery.py enroll` (a .db file)")  # fmt: skip
        elif create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_only = exists and not os.access(self.path, os.W_OK)
        try:
            tables = self._tables() if exists else []
        except BaseException:
            self.close()
            raise
        foreign = [t for t in tables if not t.startswith(("gallery_", "sqlite_"))]
        if exists and "gallery_schema" not in tables and foreign:
            self.close()
            raise GalleryError(f"{self.target} is an SQLite database but not a facetorch gallery (its tables: "
                               f"{', '.join(foreign[:5])}); give a gallery .db, or a new file name to create one")  # fmt: skip
        self._open(create, settings, f"{self.target} holds no facetorch gallery (an empty database); enrol people into it "
                                     "with `gallery.py enroll`")  # fmt: skip

    def _connect(self) -> Any:
        try:
            uri = f"file:{self.path}?mode=ro" if self.read_only else str(self.path)
            connection = sqlite3.connect(uri, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=self.read_only,
                                         check_same_thread=True)  # fmt: skip
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.read_only:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")  # a committed enrolment survives a power cut too
            connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as error:
            raise GalleryError(f"{self.target} cannot be opened as an SQLite database: {error}") from error
        return connection

    def _tables(self) -> list[str]:
        try:
            records = self._cursor().execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.DatabaseError as error:
            raise GalleryError(f"{self.target} is not a readable SQLite database: {error}") from error
        return sorted(str(r[0]) for r in records)

    def _table_exists(self, cursor: Any, table: str) -> bool:
        return cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None

    @contextmanager
    def _begin_write(self, cursor: Any) -> Iterator[None]:
        if self.read_only:
            raise PermissionError(f"{self.target} is read-only for this user; enrol into a gallery you may write")
        cursor.execute("BEGIN IMMEDIATE")  # the write lock now (waiting up to the busy timeout), not at the first write
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    @contextmanager
    def _begin_read(self, cursor: Any) -> Iterator[None]:
        if cursor.connection.in_transaction:  # inside a write: its own view already
            yield
            return
        cursor.execute("BEGIN")  # one snapshot for the reads of the block (WAL)
        try:
            yield
        finally:
            cursor.execute("COMMIT")

    def _in(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list(self, values: list[Any]) -> Any:
        import json

        return json.dumps(values)
