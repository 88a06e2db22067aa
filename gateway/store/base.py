"""The database interface the gateway writes and reads through.

SQL is written once with `?` placeholders and the subset both SQLite 3.35+
and PostgreSQL 12+ understand (`ON CONFLICT`, `RETURNING`); the PostgreSQL
backend rewrites the placeholders. Times are stored as integer milliseconds
since the Unix epoch, which is UTC by definition and compares the same way
in both backends.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]


class StoreError(RuntimeError):
    """A database that cannot be opened, migrated or written."""


class Tx(abc.ABC):
    """One open transaction."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement and return its rows (empty for statements without rows)."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""

    @abc.abstractmethod
    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Roll back only the statements of the block when it raises."""

    @abc.abstractmethod
    def lock_events(self) -> None:
        """Serialise event-log inserts so event ids commit in increasing order."""


class Database(abc.ABC):
    """A connection factory: one writer transaction at a time, readers per thread."""

    dialect: str

    @abc.abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Open a write transaction that commits when the block ends."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read-only statement on this thread's connection."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection this object opened."""

    @abc.abstractmethod
    def _run_script(self, tx: Tx, script: str) -> None: ...

    def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded in `schema_migrations`.

        Returns:
            The versions applied now.
        """
        applied: list[int] = []
        for version, name, script in _migrations(self.dialect):
            with self.transaction() as tx:
                tx.lock_events()
                tx.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "applied_ms BIGINT NOT NULL)"
                )
                done = tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                )
                if done:
                    continue
                self._run_script(tx, script)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) "
                    "VALUES (?, ?, ?)",
                    (version, name, _now_ms()),
                )
            logger.info("applied migration %04d %s (%s)", version, name, self.dialect)
            applied.append(version)
        return applied


def _now_ms() -> int:
    return int(time.time() * 1000)


def _migrations(dialect: str) -> list[tuple[int, str, str]]:
    folder = resources.files("gateway.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        found.append((int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


def split_script(script: str) -> list[str]:
    """Split a migration file into statements at lines that end with `;`."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return [statement for statement in statements if statement]


def open_database(url: str, max_readers: int = 8) -> Database:
    """Open the database named by a `sqlite:///PATH` or `postgresql://` URL.

    Args:
        url: the store URL.
        max_readers: PostgreSQL connections for reads; SQLite ignores it and
            opens one reader connection per thread.

    Raises:
        StoreError: for another scheme or when the server cannot be reached.
    """
    if url.startswith("sqlite:///"):
        # Imported here so that each backend's driver loads only when used.
        from gateway.store.sqlite import SqliteDatabase  # noqa: PLC0415

        return SqliteDatabase(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresDatabase  # noqa: PLC0415

        return PostgresDatabase(url, max_readers)
    raise StoreError(
        f"unsupported database url {url!r}; use sqlite:///PATH or postgresql://..."
    )
