"""PostgreSQL backend (psycopg 3): a writer connection and a bounded reader pool."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from gateway.store.base import Database, Row, StoreError, Tx

logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\?")
# Any constant works; it only has to be the same in every gateway instance.
_EVENT_LOCK_KEY = 0x5174_1AB0


def _to_pg(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql)


class _PostgresTx(Tx):
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection
        self._events_locked = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if params:
            cursor = self._connection.execute(_to_pg(sql), tuple(params))
        else:
            # Without parameters psycopg sends the text as is, which allows
            # several statements (migration scripts).
            cursor = self._connection.execute(sql)
        if cursor.description is None:
            return []
        return cursor.fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(_to_pg(sql), rows)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self._connection.transaction():
            yield

    def lock_events(self) -> None:
        # Event ids come from a sequence. Without this lock a transaction
        # that took id 7 could commit after one that took id 8, so a stream
        # that already sent 8 would never send 7.
        if not self._events_locked:
            self._connection.execute(
                "SELECT pg_advisory_xact_lock(%s)", (_EVENT_LOCK_KEY,)
            )
            self._events_locked = True


class PostgresDatabase(Database):
    """A PostgreSQL database given by a postgresql:// URL."""

    dialect = "postgres"

    def __init__(self, url: str, max_readers: int = 8) -> None:
        self.url = url
        # API requests run on a thread pool of about 40 threads; a connection
        # per thread would take that many server connections per instance.
        self._readers = threading.BoundedSemaphore(max_readers)
        self._idle: list[psycopg.Connection[Any]] = []
        self._write_lock = threading.Lock()
        self._all: list[psycopg.Connection[Any]] = []
        self._all_lock = threading.Lock()
        self._writer = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            connection = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as error:
            host = self.url.split("@")[-1]
            raise StoreError(
                f"cannot connect to PostgreSQL at {host}: {error}"
            ) from None
        with self._all_lock:
            self._all.append(connection)
        return connection

    def _writer_connection(self) -> psycopg.Connection[Any]:
        if self._writer.closed or self._writer.broken:
            logger.warning("PostgreSQL writer connection lost; reconnecting")
            self._writer = self._connect()
        return self._writer

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Open a write transaction that commits when the block ends."""
        with self._write_lock:
            connection = self._writer_connection()
            with connection.transaction():
                yield _PostgresTx(connection)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read-only statement on a pooled connection.

        A caller waits while all `max_readers` connections are busy.
        """
        with self._readers:
            connection = self._take_idle()
            try:
                cursor = connection.execute(_to_pg(sql), tuple(params))
                rows = cursor.fetchall() if cursor.description is not None else []
            finally:
                self._give_back(connection)
        return rows

    def _take_idle(self) -> psycopg.Connection[Any]:
        with self._all_lock:
            while self._idle:
                connection = self._idle.pop()
                if not (connection.closed or connection.broken):
                    return connection
                self._all.remove(connection)
        return self._connect()

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        with self._all_lock:
            if connection.closed or connection.broken:
                if connection in self._all:
                    self._all.remove(connection)
                return
            self._idle.append(connection)

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._all_lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
            self._idle.clear()

    def _run_script(self, tx: Tx, script: str) -> None:
        tx.execute(script)
