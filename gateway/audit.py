"""Audit log of access to personal data, and the export and deletion paths.

The log records who viewed or downloaded evidence, who acknowledged or
resolved an incident, and every export and deletion. It lives in its own
table, created on first use, so it needs no schema migration.

Command line: `python -m gateway.audit {log,export,delete} --db URL ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.line_speeds import COLUMNS as SPEED_COLUMNS
from gateway.store import Database, StoreError, open_database
from gateway.timeutil import now_ms

logger = logging.getLogger(__name__)

ACTIONS = (
    "evidence.view",
    "evidence.download",
    "incident.ack",
    "incident.resolve",
    "export",
    "delete",
)
DEFAULT_RETENTION_DAYS = 730
_DAY_MS = 86_400_000
# Tables with a site column, and the time column a deletion compares against.
_SITE_TABLES = (
    ("messages", "received_ms"),
    ("count_lines", "start_ms"),
    ("count_zones", "start_ms"),
    ("incidents", "started_ms"),
)
_COLUMNS = {
    "messages": (
        "message_id",
        "site",
        "node",
        "kind",
        "seq",
        "sent_ms",
        "received_ms",
        "topic",
        "payload",
    ),
    "count_lines": (
        "message_id",
        "site",
        "node",
        "line",
        "class",
        "start_ms",
        "end_ms",
        "n_in",
        "n_out",
        *SPEED_COLUMNS,
    ),
    "count_zones": (
        "message_id",
        "site",
        "node",
        "zone",
        "class",
        "start_ms",
        "end_ms",
        "current_count",
        "max_count",
        "mean_count",
        "entries",
        "exits",
    ),
    "incidents": (
        "incident_id",
        "site",
        "node",
        "type",
        "rule",
        "severity",
        "zone",
        "line",
        "class",
        "state",
        "started_ms",
        "ended_ms",
        "detail",
        "has_evidence",
        "acked_by",
        "acked_ms",
        "ack_note",
        "resolved_by",
        "resolved_ms",
        "resolve_note",
        "updated_ms",
    ),
    "incident_events": (
        "incident_id",
        "action",
        "at_ms",
        "actor",
        "note",
        "message_id",
        "detail",
    ),
}
_CREATE = (
    "CREATE TABLE IF NOT EXISTS audit_log ("
    "at_ms BIGINT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, "
    "action TEXT NOT NULL, site TEXT, node TEXT, incident_id TEXT, detail TEXT)"
)


class AuditError(ValueError):
    """An invalid audit request: unknown action, missing actor or bad date."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record; times are milliseconds since the Unix epoch (UTC)."""

    at_ms: int
    actor: str
    role: str
    action: str
    site: str | None = None
    node: str | None = None
    incident_id: str | None = None
    detail: str | None = None


def ensure_table(db: Database) -> None:
    """Create the audit table if it does not exist yet."""
    with db.transaction() as tx:
        tx.execute(_CREATE)


def record(db: Database, entry: AuditEntry) -> None:
    """Append one entry to the audit log.

    Raises:
        AuditError: the action is unknown or the actor is empty.
    """
    if entry.action not in ACTIONS:
        raise AuditError(
            f"audit action {entry.action!r} is unknown; use one of {', '.join(ACTIONS)}"
        )
    if not entry.actor:
        raise AuditError("audit entry has an empty actor; pass the operator's name")
    ensure_table(db)
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO audit_log (at_ms, actor, role, action, site, node, "
            "incident_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at_ms,
                entry.actor,
                entry.role,
                entry.action,
                entry.site,
                entry.node,
                entry.incident_id,
                entry.detail,
            ),
        )
    logger.info(
        "audit: %s by %s (%s) on %s/%s incident %s",
        entry.action,
        entry.actor,
        entry.role,
        entry.site,
        entry.node,
        entry.incident_id,
    )


def entries(db: Database, since_ms: int = 0) -> list[AuditEntry]:
    """Return the entries at or after `since_ms`, oldest first."""
    ensure_table(db)
    rows = db.query(
        "SELECT at_ms, actor, role, action, site, node, incident_id, detail "
        "FROM audit_log WHERE at_ms >= ? ORDER BY at_ms",
        (since_ms,),
    )
    return [AuditEntry(*row) for row in rows]


def apply_retention(
    db: Database, days: float = DEFAULT_RETENTION_DAYS, now: int | None = None
) -> int:
    """Delete entries older than `days` (0 keeps them forever); return the count."""
    if days <= 0:
        return 0
    ensure_table(db)
    cutoff = (now_ms() if now is None else now) - int(days * _DAY_MS)
    with db.transaction() as tx:
        rows = tx.execute(
            "DELETE FROM audit_log WHERE at_ms < ? RETURNING 1", (cutoff,)
        )
    logger.info(
        "audit retention deleted %d entries older than %g days", len(rows), days
    )
    return len(rows)


def export_node(db: Database, site: str, node: str) -> dict[str, Any]:
    """Return every row stored for one node, as JSON-ready lists of objects."""
    result: dict[str, Any] = {"site": site, "node": node}
    for table, _column in _SITE_TABLES:
        columns = _COLUMNS[table]
        rows = db.query(
            f"SELECT {', '.join(columns)} FROM {table} WHERE site = ? AND node = ?",
            (site, node),
        )
        result[table] = [dict(zip(columns, row, strict=True)) for row in rows]
    columns = _COLUMNS["incident_events"]
    rows = db.query(
        f"SELECT {', '.join(columns)} FROM incident_events WHERE incident_id IN "
        "(SELECT incident_id FROM incidents WHERE site = ? AND node = ?)",
        (site, node),
    )
    result["incident_events"] = [dict(zip(columns, row, strict=True)) for row in rows]
    return result


def delete_site_before(db: Database, site: str, before_ms: int) -> dict[str, int]:
    """Delete a site's rows older than `before_ms` and return counts per table."""
    deleted: dict[str, int] = {}
    with db.transaction() as tx:
        tx.execute(
            "DELETE FROM incident_events WHERE incident_id IN (SELECT incident_id "
            "FROM incidents WHERE site = ? AND started_ms < ?)",
            (site, before_ms),
        )
        for table, column in _SITE_TABLES:
            rows = tx.execute(
                f"DELETE FROM {table} WHERE site = ? AND {column} < ? RETURNING 1",
                (site, before_ms),
            )
            deleted[table] = len(rows)
    return deleted


def parse_date_ms(text: str) -> int:
    """Parse a UTC date (YYYY-MM-DD) or RFC 3339 time into epoch milliseconds."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AuditError(
            f"date {text!r} is invalid; use YYYY-MM-DD or 2025-01-31T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.audit",
        description="Read the audit log, export a node's data, delete a site's data.",
    )
    parser.add_argument(
        "--db", required=True, help="sqlite:///PATH or postgresql://..."
    )
    parser.add_argument("--actor", default="cli", help="operator name for the log")
    commands = parser.add_subparsers(dest="command", required=True)
    log = commands.add_parser("log", help="print audit entries as JSON lines")
    log.add_argument("--since", default="1970-01-01", help="UTC date or time")
    export = commands.add_parser("export", help="print one node's data as JSON")
    export.add_argument("--site", required=True)
    export.add_argument("--node", required=True)
    delete = commands.add_parser("delete", help="delete a site's data before a date")
    delete.add_argument("--site", required=True)
    delete.add_argument("--before", required=True, help="UTC date or time")
    return parser


def _dispatch(args: argparse.Namespace, db: Database) -> None:
    if args.command == "log":
        for entry in entries(db, parse_date_ms(args.since)):
            sys.stdout.write(json.dumps(_as_dict(entry)) + "\n")
        return
    if args.command == "export":
        sys.stdout.write(json.dumps(export_node(db, args.site, args.node)) + "\n")
        record(
            db,
            AuditEntry(now_ms(), args.actor, "admin", "export", args.site, args.node),
        )
        return
    before_ms = parse_date_ms(args.before)
    deleted = delete_site_before(db, args.site, before_ms)
    detail = json.dumps({"before_ms": before_ms, **deleted})
    record(
        db,
        AuditEntry(now_ms(), args.actor, "admin", "delete", args.site, detail=detail),
    )
    sys.stdout.write(json.dumps(deleted) + "\n")


def _as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in AuditEntry.__slots__}


def main(argv: list[str] | None = None) -> int:
    """Run the audit command line and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        db = open_database(args.db)
        try:
            db.migrate()
            _dispatch(args, db)
        finally:
            db.close()
    except (AuditError, StoreError) as error:
        sys.stderr.write(f"gateway.audit: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
