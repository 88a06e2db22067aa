"""Delete data older than its configured retention, one data kind at a time."""

from __future__ import annotations

import logging
import threading

from gateway import audit
from gateway.config import RetentionSettings
from gateway.store import Database
from gateway.timeutil import now_ms

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000


def apply_retention(
    db: Database, settings: RetentionSettings, now: int | None = None
) -> dict[str, int]:
    """Delete expired rows and return how many were deleted per table."""
    now = now_ms() if now is None else now
    rules = (
        ("messages", "received_ms", settings.raw_messages_days, ""),
        ("dead_letters", "received_ms", settings.dead_letters_days, ""),
        ("count_lines", "start_ms", settings.count_rows_days, ""),
        ("count_zones", "start_ms", settings.count_rows_days, ""),
        ("events", "at_ms", settings.events_days, ""),
        ("incidents", "updated_ms", settings.incidents_days, " AND state = 'resolved'"),
    )
    deleted: dict[str, int] = {}
    for table, column, days, extra in rules:
        if days <= 0:
            continue
        cutoff = now - int(days * _DAY_MS)
        with db.transaction() as tx:
            if table == "incidents":
                tx.execute(
                    "DELETE FROM incident_events WHERE incident_id IN (SELECT "
                    "incident_id "
                    f"FROM incidents WHERE {column} < ?{extra})",
                    (cutoff,),
                )
            rows = tx.execute(
                f"DELETE FROM {table} WHERE {column} < ?{extra} RETURNING 1", (cutoff,)
            )
        deleted[table] = len(rows)
    deleted["audit_log"] = audit.apply_retention(db, settings.audit_log_days, now)
    logger.info(
        "retention deleted %s",
        ", ".join(f"{count} {table}" for table, count in deleted.items()) or "nothing",
    )
    return deleted


class RetentionTask:
    """Runs `apply_retention` every `settings.interval_s` on a daemon thread."""

    def __init__(self, db: Database, settings: RetentionSettings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="gateway-retention", daemon=True
        )

    def start(self) -> None:
        """Start the periodic task."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the task after its current run."""
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                apply_retention(self.db, self.settings)
            except Exception:
                logger.exception(
                    "retention run failed; retrying in %.0f s", self.settings.interval_s
                )
