"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` on a Unix socket in a temporary folder.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (the
folder is made its own). No TCP port is opened (``listen_addresses=''``). Tests that need it skip
where no PostgreSQL binaries are installed (``.ci/run`` installs them on a fresh machine).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

__all__ = ["PostgresServer", "postgres_binaries", "postgres_url", "postgres_server"]


def postgres_binaries() -> Optional[Path]:
    """The folder of ``initdb`` and ``pg_ctl`` (PATH, else Debian's /usr/lib/postgresql/*/bin), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


class PostgresServer:
    """Start with :meth:`start`, make databases with :meth:`new_database`, end with :meth:`stop`."""

    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise FileNotFoundError("no PostgreSQL binaries (initdb, pg_ctl)")
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="facetorch-pg-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.user: Optional[str] = None
        if os.geteuid() == 0:  # PostgreSQL refuses root: the postgres user runs it, in a folder of its own
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            self.socket.mkdir()
            for path in (self.root, self.socket):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(self.root, 0o755)
        else:
            self.socket.mkdir()
        self.count = 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120, cwd=self.root)

    def start(self) -> PostgresServer:
        """initdb (trust, no fsync) and start on the socket; returns self."""
        self._run(str(self.binaries / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        options = f"-k {self.socket} -c listen_addresses='' -c fsync=off -c max_connections=40"
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
                  "start")  # fmt: skip
        return self

    def url(self, database: str = "postgres") -> str:
        """A psycopg URL of ``database`` on the socket."""
        return f"postgresql://postgres@/{database}?host={self.socket}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self.count += 1
        name = f"gallery_test_{self.count}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop at once and remove the folder."""
        try:
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for a test module (skips where PostgreSQL or psycopg is missing)."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'psycopg[binary]')")
    try:
        running = PostgresServer().start()
    except KeyError:
        pytest.skip("running as root, and there is no postgres user to run PostgreSQL as")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the module's server."""
    return postgres_server.new_database()
