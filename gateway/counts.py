"""Store the line and zone rows of counts messages."""

from __future__ import annotations

from typing import Any

from gateway import line_speeds
from gateway.store import Tx
from gateway.timeutil import iso_ms

LINE_INSERT = (
    "INSERT INTO count_lines (message_id, site, node, line, class, start_ms, end_ms, "
    f"n_in, n_out, {', '.join(line_speeds.COLUMNS)}) "
    f"VALUES ({', '.join('?' * (9 + len(line_speeds.COLUMNS)))})"
)
ZONE_INSERT = (
    "INSERT INTO count_zones (message_id, site, node, zone, class, start_ms, end_ms, "
    "current_count, max_count, mean_count, entries, exits) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def store_counts(tx: Tx, message: dict[str, Any]) -> None:
    """Insert one row per line and class and per zone and class of the interval."""
    start_ms = iso_ms(message["interval_start"])
    end_ms = iso_ms(message["interval_end"])
    key = (message["message_id"], message["site"], message["node"])
    lines = [
        (
            *key,
            row["line"],
            row["class"],
            start_ms,
            end_ms,
            row["in"],
            row["out"],
            *line_speeds.row_values(row.get("speed_in")),
            *line_speeds.row_values(row.get("speed_out")),
        )
        for row in message["lines"]
    ]
    zones = [
        (
            *key,
            row["zone"],
            row["class"],
            start_ms,
            end_ms,
            row["current"],
            row["max"],
            float(row["mean"]),
            row["entries"],
            row["exits"],
        )
        for row in message["zones"]
    ]
    if lines:
        tx.executemany(LINE_INSERT, lines)
    if zones:
        tx.executemany(ZONE_INSERT, zones)
