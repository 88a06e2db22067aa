"""Gateway audit log, export and deletion on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit import (
    AuditEntry,
    AuditError,
    apply_retention,
    delete_site_before,
    entries,
    export_node,
    main,
    parse_date_ms,
    record,
)
from gateway.store import Database, open_database

DAY_MS = 86_400_000


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(f"sqlite:///{tmp_path / 'gw.sqlite3'}")
    database.migrate()
    return database


def add_counts(db: Database, site: str, node: str, start_ms: int) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO count_lines (message_id, site, node, line, class, start_ms, "
            "end_ms, n_in, n_out) VALUES (?, ?, ?, 'door', 'person', ?, ?, 1, 2)",
            (f"m-{site}-{node}-{start_ms}", site, node, start_ms, start_ms + 60_000),
        )


def test_audit_records_and_lists(db: Database) -> None:
    record(db, AuditEntry(1_000, "ana", "viewer", "evidence.view", "s", "n", "i-1"))
    record(db, AuditEntry(2_000, "bo", "dispatcher", "incident.ack", "s", "n", "i-1"))
    found = entries(db)
    assert [e.action for e in found] == ["evidence.view", "incident.ack"]
    assert [e.actor for e in entries(db, since_ms=1_500)] == ["bo"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (AuditEntry(1, "ana", "viewer", "peek"), "audit action 'peek' is unknown"),
        (AuditEntry(1, "", "viewer", "export"), "empty actor"),
    ],
    ids=["unknown-action", "empty-actor"],
)
def test_audit_rejects_bad_entry(db: Database, entry: AuditEntry, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        record(db, entry)


def test_audit_retention_deletes_old(db: Database) -> None:
    now = 1_000 * DAY_MS
    record(db, AuditEntry(now - 800 * DAY_MS, "ana", "viewer", "evidence.view"))
    record(db, AuditEntry(now - 10 * DAY_MS, "ana", "viewer", "evidence.view"))
    assert apply_retention(db, 730, now=now) == 1
    assert len(entries(db)) == 1
    assert apply_retention(db, 0, now=now) == 0


def test_export_and_delete_by_site(db: Database) -> None:
    add_counts(db, "s", "n", 1_000)
    add_counts(db, "s", "n", 5 * DAY_MS)
    add_counts(db, "other", "n", 1_000)
    exported = export_node(db, "s", "n")
    assert len(exported["count_lines"]) == 2
    assert exported["count_lines"][0]["line"] == "door"
    assert exported["count_lines"][0]["speed_in_n"] is None
    deleted = delete_site_before(db, "s", DAY_MS)
    assert deleted["count_lines"] == 1
    assert len(export_node(db, "s", "n")["count_lines"]) == 1
    assert len(export_node(db, "other", "n")["count_lines"]) == 1


def test_cli_delete_is_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    assert (
        main(
            [
                "--db",
                url,
                "--actor",
                "dpo",
                "delete",
                "--site",
                "s",
                "--before",
                "2025-01-01",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["messages"] == 0
    assert main(["--db", url, "log"]) == 0
    logged = json.loads(capsys.readouterr().out)
    assert logged["action"] == "delete"
    assert logged["actor"] == "dpo"


def test_bad_date_names_format() -> None:
    with pytest.raises(AuditError, match="date 'yesterday' is invalid"):
        parse_date_ms("yesterday")
