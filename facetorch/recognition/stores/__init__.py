"""Gallery stores, chosen by the ``--gallery`` value.

SQLite (``.db`` or ``sqlite:///PATH``, the default for new galleries), PostgreSQL
(``postgresql://...``) and ``.npz`` files (format 2, read-only).

``base``: the settings and the interface; ``sql``: the schema and the writes SQLite and
PostgreSQL share; ``sqlite``, ``postgres`` and ``npz``: one store each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.stores.base import GallerySettings, Rows, Store, check_name

__all__ = ["GallerySettings", "Rows", "Store", "check_name", "open_store", "store_kind"]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def store_kind(target: str) -> str:
    """``postgres``, ``sqlite`` or ``npz`` for a ``--gallery`` value (an existing file by its first bytes).

    Raises:
        ValueError: a path of no known kind.
    """
    from facetorch.recognition.stores.postgres import is_postgres_url
    from facetorch.recognition.stores.sqlite import MAGIC, sqlite_path

    if is_postgres_url(target):
        return "postgres"
    if sqlite_path(target) is not None:
        return "sqlite"
    path = Path(target)
    if path.suffix.lower() == ".npz":
        return "npz"
    if path.suffix.lower() in SQLITE_SUFFIXES:
        return "sqlite"
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(len(MAGIC))
        if head == MAGIC:
            return "sqlite"
        if head.startswith(b"PK"):
            return "npz"
    raise ValueError(f"--gallery {target!r}: expected a gallery file ending in .db (SQLite, the default), sqlite:///PATH, "
                     "postgresql://... or an .npz gallery of facetorch 0.1")  # fmt: skip


def open_store(target: str | Path, create: bool = False, settings: Optional[GallerySettings] = None,
               flag: str = "--gallery") -> Store:  # fmt: skip
    """The store behind ``target``; made (with ``settings``) when ``create`` and it does not exist yet."""
    target = str(target)
    kind = store_kind(target)
    if kind == "postgres":
        from facetorch.recognition.stores.postgres import PostgresStore

        return PostgresStore(target, create, settings, flag)
    if kind == "sqlite":
        from facetorch.recognition.stores.sqlite import SQLiteStore, sqlite_path

        return SQLiteStore(sqlite_path(target) or Path(target), create, settings, flag)
    from facetorch.recognition.stores.npz import NpzStore

    if not Path(target).exists() and create:
        new = str(Path(target).with_suffix(".db"))
        raise GalleryError(f"{flag} {target!r}: new galleries are SQLite files from facetorch 0.2.0 (.npz is read-only): "
                           f"give {new!r}, or convert an old one with `gallery.py migrate`")  # fmt: skip
    return NpzStore(target, flag)
