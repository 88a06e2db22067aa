"""Event log behind the SSE stream: incident and node status changes.

Events are rows with increasing ids in the `events` table, written in the
same transaction as the change they describe. A stream sends rows after the
client's `Last-Event-ID`, so a client that reconnects gets what it missed
for as long as retention keeps the rows (`retention.events_days`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.store import Database, Tx
from gateway.timeutil import now_ms

logger = logging.getLogger(__name__)

EVENT_TYPES = ("incident", "node")
# A comment line at this period keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
PAGE = 500


def append_event(tx: Tx, event_type: str, data: dict[str, Any]) -> None:
    """Add an event to the log inside the caller's transaction."""
    tx.lock_events()
    tx.execute(
        "INSERT INTO events (at_ms, type, data) VALUES (?, ?, ?)",
        (now_ms(), event_type, json.dumps(data, separators=(",", ":"))),
    )


def latest_event_id(db: Database) -> int:
    """Return the id of the newest event, or 0."""
    rows = db.query("SELECT MAX(id) FROM events")
    return int(rows[0][0] or 0)


def events_after(
    db: Database, after_id: int, limit: int = PAGE
) -> list[tuple[int, str, str]]:
    """Return up to `limit` events with ids above `after_id`, oldest first."""
    rows = db.query(
        "SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    )
    return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def format_event(event_id: int, event_type: str, data: str) -> str:
    """Return one SSE frame."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n"


async def event_stream(
    db: Database,
    after_id: int,
    poll_s: float,
    is_disconnected: Callable[[], Any],
) -> AsyncIterator[str]:
    """Yield SSE frames from `after_id` on until the client disconnects."""
    last_id = after_id
    idle_s = 0.0
    yield "retry: 1000\n\n"
    while not await is_disconnected():
        rows = await run_in_threadpool(events_after, db, last_id)
        for event_id, event_type, data in rows:
            yield format_event(event_id, event_type, data)
            last_id = event_id
        if len(rows) == PAGE:
            continue
        if rows:
            idle_s = 0.0
        elif idle_s >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            idle_s = 0.0
        await asyncio.sleep(poll_s)
        idle_s += poll_s
