"""The shared gallery: a PostgreSQL database (``postgresql://...``) that several processes or machines use at once.

psycopg 3 (``pip install "psycopg[binary]"``), one connection per thread, a short connect timeout so
that a server that does not answer is said at once. Writers serialise on a transaction-level
advisory lock, so versions commit in order and two enrolling processes never collide on a name or
a file; reads of the change log run in one REPEATABLE READ snapshot. The vector index lives in
each process's memory and catches up through the change log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.stores.base import GallerySettings
from facetorch.recognition.stores.sql import SqlStore

__all__ = ["CONNECT_TIMEOUT_S", "PostgresStore", "is_postgres_url", "redact"]

CONNECT_TIMEOUT_S = 5  # seconds; a URL's own connect_timeout wins
WRITE_LOCK = 0x66746731  # the advisory lock every writer of a gallery database takes ("ftg1")


def is_postgres_url(target: str) -> bool:
    """``postgresql://...`` or ``postgres://...``."""
    return target.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresStore(SqlStore):
    """A gallery in a PostgreSQL database.

    Args:
        url: ``postgresql://[user[:password]@][host][:port]/dbname[?param=value]`` (a Unix socket folder as
            ``host=/path`` in the query).
        create: Make the gallery's tables when the database has none, with ``settings``.
        settings: The new gallery's settings.
        flag: The option that named the database, for messages.

    Raises:
        GalleryError: psycopg is missing, the server does not answer, or the database holds no gallery.
    """

    IDENTITY = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    BLOB = "BYTEA"
    PARAMETER = "%s"

    def __init__(self, url: str, create: bool = False, settings: Optional[GallerySettings] = None,
                 flag: str = "--gallery") -> None:  # fmt: skip
        super().__init__(f"{flag} {redact(url)!r}")
        self.url = url
        try:
            import psycopg
        except ImportError as error:
            raise GalleryError(f"{self.target}: a PostgreSQL gallery needs psycopg 3: pip install \"psycopg[binary]\"") from error
        self._psycopg = psycopg
        self._open(create, settings, f"{self.target} holds no facetorch gallery (no gallery_schema table); enrol people "
                                     "into it with `gallery.py enroll` to create one")  # fmt: skip

    def _connect(self) -> Any:
        extra = {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT_S}
        try:
            return self._psycopg.connect(self.url, autocommit=True, **extra)
        except self._psycopg.Error as error:
            reason = " ".join(str(error).split())[:300]
            raise GalleryError(f"{self.target} does not answer: {reason} (is the server running, and the URL right?)") from error

    def _table_exists(self, cursor: Any, table: str) -> bool:
        # pg_class read through the statement's snapshot, not to_regclass: to_regclass answers from the
        # backend's catalog cache, which still says "no such table" after waiting on the write lock while
        # another process created the gallery (two first enrolments at once then both made it).
        return cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE c.relname = %s AND n.nspname = ANY(current_schemas(false)))",
                              (table,)).fetchone()[0]  # fmt: skip

    @contextmanager
    def _begin_write(self, cursor: Any) -> Iterator[None]:
        with cursor.connection.transaction():
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))  # writers one at a time, until commit
            yield

    @contextmanager
    def _begin_read(self, cursor: Any) -> Iterator[None]:
        if cursor.connection.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            yield
            return
        with cursor.connection.transaction():
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def _in(self, column: str) -> str:
        return f"{column} = ANY(%s)"

    def _list(self, values: list[Any]) -> Any:
        return list(values)
