"""SQLite backend: WAL, one writer at a time, a reader connection per thread."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.store.base import Database, Row, StoreError, Tx, split_script

logger = logging.getLogger(__name__)

# A writer waits this long for another connection's write transaction before
# it fails. In WAL mode readers do not wait for writers.
BUSY_TIMEOUT_MS = 60_000


def _check_folder(path: str) -> None:
    """Raise StoreError when the database file's folder does not exist.

    SQLite creates the file itself; a missing folder is far more often a
    typo in the path than a wish for new folders, so none is created.
    """
    folder = Path(path).parent
    if folder.is_dir():
        return
    what = "is not a folder" if folder.exists() else "does not exist"
    raise StoreError(
        f"cannot open SQLite file {path}: its folder {folder} {what}; create it "
        f"(mkdir -p {folder}) or fix the path in the store url"
    )


class _SqliteTx(Tx):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._savepoints = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._connection.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self._connection.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._connection.execute(f"ROLLBACK TO {name}")
            self._connection.execute(f"RELEASE {name}")
            raise
        self._connection.execute(f"RELEASE {name}")

    def lock_events(self) -> None:
        # BEGIN IMMEDIATE already holds the database's single write lock.
        return


class SqliteDatabase(Database):
    """A SQLite file in WAL mode.

    Writers open `BEGIN IMMEDIATE`, so they queue on the busy timeout for the
    write lock instead of failing when a read transaction tries to upgrade.
    A lock held past BUSY_TIMEOUT_MS raises StoreError. Each thread reads on
    its own connection, and WAL readers see the last commit without waiting.
    """

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            _check_folder(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot open SQLite file {self.path}: {error}") from None
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # NORMAL in WAL mode survives a process crash (SIGKILL); only a power
        # cut can lose the last commits.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        with self._all_lock:
            self._all.append(connection)
        return connection

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Open a write transaction that commits when the block ends."""
        with self._write_lock:
            connection = self._writer
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreError(
                    f"cannot start a write on {self.path}: {error}"
                ) from None
            try:
                yield _SqliteTx(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read-only statement on this thread's connection."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._all_lock:
            for connection in self._all:
                connection.close()
            self._all.clear()

    def _run_script(self, tx: Tx, script: str) -> None:
        for statement in split_script(script):
            tx.execute(statement)
