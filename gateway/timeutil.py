"""Conversions between epoch milliseconds (storage) and aware datetimes (API)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from edge.messages import parse_utc


def now_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)


def to_ms(moment: datetime) -> int:
    """Convert an aware datetime to epoch milliseconds."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}; pass a timezone-aware time")
    return int(round(moment.timestamp() * 1000))


def iso_ms(text: str) -> int:
    """Convert a message's RFC 3339 UTC time to epoch milliseconds."""
    return to_ms(parse_utc(text))


def ms_iso(value: int | None) -> str | None:
    """Format epoch milliseconds as RFC 3339 UTC with a Z suffix."""
    if value is None:
        return None
    moment = datetime.fromtimestamp(value / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
