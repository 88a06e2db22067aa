"""Write path on both backends: dedup, dead letters, gaps, nodes, incidents."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.messages import encode, envelope, topic_for
from gateway import incidents, line_speeds, nodes
from gateway.aggregate import CountQuery, run_query
from gateway.config import RetentionSettings
from gateway.ingest import Accepted, Rejected, classify
from gateway.pipeline import apply_batch
from gateway.retention import apply_retention
from gateway.store import Database, open_database
from gateway.store import base as store_base
from gateway.store.postgres import PostgresDatabase
from gateway.timeutil import now_ms
from tests.support import gateway_fixtures
from tests.support.gateway_fixtures import (
    counts_message,
    heartbeat_message,
    incident_message,
    status_message,
    wire,
)

MAX_BYTES = 100_000

# Fixtures shared by the gateway tests, on SQLite and PostgreSQL.
db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database


def ingest(db: Database, *messages: dict) -> None:
    items = [
        classify(*wire(message), max_bytes=MAX_BYTES, keep_bytes=512, now_ms=now_ms())
        for message in messages
    ]
    apply_batch(db, items)


def ingest_raw(db: Database, topic: str, raw: bytes) -> Accepted | Rejected:
    item = classify(topic, raw, max_bytes=MAX_BYTES, keep_bytes=512, now_ms=now_ms())
    apply_batch(db, [item])
    return item


def scalar(db: Database, sql: str, params: tuple = ()) -> int:
    return int(db.query(sql, params)[0][0] or 0)


def test_counts_rows_stored(db: Database) -> None:
    message = counts_message(lines=[("gate", "person", 3, 1), ("gate", "car", 0, 2)])
    ingest(db, message)
    rows = db.query("SELECT line, class, n_in, n_out FROM count_lines ORDER BY class")
    assert rows == [("gate", "car", 0, 2), ("gate", "person", 3, 1)]


SPEEDS = {"n": 4, "mean_kmh": 31.5, "p85_kmh": 38.25, "max_kmh": 42.0}
SPEED_ROWS = [
    ("both", {"speed_in": SPEEDS, "speed_out": SPEEDS}, (4, 31.5, 38.25, 42.0) * 2),
    ("in_only", {"speed_in": SPEEDS}, (4, 31.5, 38.25, 42.0, None, None, None, None)),
    ("out_only", {"speed_out": SPEEDS}, (None, None, None, None, 4, 31.5, 38.25, 42.0)),
    ("none", {}, (None,) * 8),
    (
        "merged_no_p85",
        {"speed_in": {"n": 4, "mean_kmh": 31.5, "max_kmh": 42.0}},
        (4, 31.5, None, 42.0, None, None, None, None),
    ),
]


@pytest.mark.parametrize(
    ("speeds", "stored"),
    [case[1:] for case in SPEED_ROWS],
    ids=[case[0] for case in SPEED_ROWS],
)
def test_counts_speeds_stored(db: Database, speeds: dict, stored: tuple) -> None:
    message = counts_message(lines=[("gate", "car", 4, 4)])
    message["lines"][0].update(speeds)
    ingest(db, message)
    rows = db.query(f"SELECT {', '.join(line_speeds.COLUMNS)} FROM count_lines")
    assert [tuple(row) for row in rows] == [stored]


def test_migration_0004_keeps_old_rows(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = open_database(db_url)
    every = store_base._migrations(database.dialect)  # noqa: SLF001
    monkeypatch.setattr(
        store_base,
        "_migrations",
        lambda dialect: [entry for entry in every if entry[0] <= 3],
    )
    assert database.migrate() == [1, 2, 3]
    with database.transaction() as tx:
        tx.execute(
            "INSERT INTO count_lines (message_id, site, node, line, class, start_ms, "
            "end_ms, n_in, n_out) VALUES ('old', 's1', 'n1', 'gate', 'car', 0, 60000, "
            "2, 1)"
        )
    monkeypatch.undo()
    assert database.migrate() == [4]
    old = database.query(
        f"SELECT n_in, n_out, {', '.join(line_speeds.COLUMNS)} FROM count_lines"
    )
    ingest(database, counts_message(lines=[("gate", "car", 1, 0)]))
    rows = run_query(database, CountQuery(bucket="1d", kind="lines"))["lines"]
    database.close()
    assert [tuple(row) for row in old] == [(2, 1, *(None,) * 8)]
    assert [row["in"] for row in rows] == [2, 1]
    assert all("speed_in" not in row and "speed_out" not in row for row in rows)


def test_duplicate_uuid_counted_not_stored(db: Database) -> None:
    message = counts_message()
    ingest(db, message)
    ingest(db, message, message)
    assert scalar(db, "SELECT COUNT(*) FROM messages") == 1
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == 1
    assert scalar(db, "SELECT value FROM counters WHERE name = 'duplicates'") == 2


def _huge() -> tuple[str, bytes]:
    return topic_for("s1", "n1", "counts"), b"{" + b" " * (MAX_BYTES + 1) + b"}"


def _mismatch() -> tuple[str, bytes]:
    return topic_for("s1", "other", "counts"), encode(counts_message())


def _version() -> tuple[str, bytes]:
    message = counts_message()
    message["schema_version"] = 2
    return wire(message)


def _schema() -> tuple[str, bytes]:
    message = counts_message()
    message["lines"][0]["in"] = -1
    return wire(message)


def _speed_over_count() -> tuple[str, bytes]:
    message = counts_message(lines=[("gate", "car", 2, 0)])
    message["lines"][0]["speed_in"] = {
        "n": 3,
        "mean_kmh": 30.0,
        "p85_kmh": 35.0,
        "max_kmh": 36.0,
    }
    return wire(message)


def _wrong_leaf() -> tuple[str, bytes]:
    return topic_for("s1", "n1", "status"), encode(counts_message())


MALFORMED = [
    (
        "invalid_json",
        lambda: (topic_for("s1", "n1", "counts"), b"{not json"),
        "invalid_json",
    ),
    (
        "invalid_utf8",
        lambda: (topic_for("s1", "n1", "counts"), b"\xff\xfe{}"),
        "invalid_utf8",
    ),
    ("schema", _schema, "schema"),
    ("huge", _huge, "too_large"),
    ("node_mismatch", _mismatch, "topic_mismatch"),
    ("schema_version", _version, "unknown_schema_version"),
    ("unknown_topic", lambda: ("other/thing", b"{}"), "unknown_topic"),
    ("unknown_leaf", lambda: ("sitlab/v1/s1/n1/video", b"{}"), "unknown_topic"),
    ("kind_vs_leaf", _wrong_leaf, "schema"),
    ("speed_over_count", _speed_over_count, "schema"),
    (
        "nul_text",
        lambda: (topic_for("s1", "n1", "counts"), b'{"a":"\\u0000"}'),
        "invalid_text",
    ),
    (
        "surrogate",
        lambda: (topic_for("s1", "n1", "counts"), b'{"a":"\\ud800"}'),
        "invalid_text",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"),
    [(make, reason) for _, make, reason in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_dead_lettered(db: Database, make, reason: str) -> None:
    topic, raw = make()
    ingest_raw(db, topic, raw)
    rows = db.query("SELECT reason, topic, payload_size, payload FROM dead_letters")
    assert len(rows) == 1
    assert rows[0][0] == reason
    assert rows[0][2] == len(raw)
    assert len(bytes(rows[0][3])) <= 512
    assert (
        scalar(
            db, "SELECT value FROM counters WHERE name = ?", (f"dead_letter.{reason}",)
        )
        == 1
    )
    assert scalar(db, "SELECT COUNT(*) FROM messages") == 0


def test_dead_letter_detail_names_field(db: Database) -> None:
    topic, raw = _schema()
    ingest_raw(db, topic, raw)
    detail = db.query("SELECT detail FROM dead_letters")[0][0]
    assert "lines/0/in" in detail


def test_speed_over_count_detail(db: Database) -> None:
    topic, raw = _speed_over_count()
    ingest_raw(db, topic, raw)
    detail = db.query("SELECT detail FROM dead_letters")[0][0]
    assert "/lines/0/speed_in/n = 3 exceeds /lines/0/in = 2" in detail


@pytest.mark.parametrize(
    ("seqs", "open_gaps", "resets"),
    [
        ([1, 2, 3], [], 0),
        ([1, 4], [(2, 3)], 0),
        ([1, 5, 3], [(2, 2), (4, 4)], 0),
        ([1, 5, 2, 3, 4], [], 0),
        ([1, 5, 4], [(2, 3)], 0),
        ([10, 11, 1, 2], [], 1),
        ([10, 12, 1], [(11, 11)], 1),
    ],
    ids=["in_order", "gap", "split", "filled", "shrunk", "reset", "reset_keeps_gap"],
)
def test_sequence_gaps(
    db: Database, seqs: list[int], open_gaps: list, resets: int
) -> None:
    for seq in seqs:
        ingest(db, counts_message(seq=seq))
    found = db.query(
        "SELECT first_seq, last_seq FROM seq_gaps WHERE closed_ms IS NULL ORDER BY"
        " first_seq"
    )
    assert [tuple(row) for row in found] == open_gaps
    node = nodes.list_nodes(db)[0]
    assert node["seq_resets"] == resets
    assert node["missing_messages"] == sum(
        last - first + 1 for first, last in open_gaps
    )


@pytest.mark.parametrize(
    ("arrivals", "open_gaps"),
    [
        ([(1, []), (2, [3, 4]), (5, [])], []),
        ([(1, []), (2, [4]), (3, [])], []),
        ([(1, []), (2, [4])], [(3, 3)]),
        ([(1, []), (5, []), (2, [3, 4])], []),
        ([(1, []), (6, []), (2, [4])], [(3, 3), (5, 5)]),
    ],
    ids=["in_order", "around_incident", "incident_missing", "late", "late_partial"],
)
def test_merged_counts_fill_sequence(
    db: Database, arrivals: list[tuple[int, list[int]]], open_gaps: list
) -> None:
    for seq, merged in arrivals:
        message = counts_message(seq=seq)
        if merged:
            message["merged_seqs"] = merged
        ingest(db, message)
    found = db.query(
        "SELECT first_seq, last_seq FROM seq_gaps WHERE closed_ms IS NULL ORDER BY"
        " first_seq"
    )
    node = nodes.list_nodes(db)[0]
    assert [tuple(row) for row in found] == open_gaps
    assert node["seq_resets"] == 0
    assert node["seq_conflicts"] == 0


def test_status_and_heartbeat_fill_registry(db: Database) -> None:
    ingest(db, status_message("online"), heartbeat_message())
    node = nodes.list_nodes(db)[0]
    assert node["state"] == "online"
    assert node["software_version"] == "0.1.0"
    assert node["fps"] == 9.5
    assert node["outbox_depth"] == 3


def test_heartbeat_seq_ignored_for_gaps(db: Database) -> None:
    ingest(db, counts_message(seq=1), heartbeat_message(seq=1), counts_message(seq=2))
    assert nodes.list_nodes(db)[0]["seq_gaps"] == []


def _offline_incidents(db: Database) -> list[dict]:
    return incidents.list_incidents(db, incidents.IncidentFilter(type="node_offline"))


def test_last_will_opens_node_offline(db: Database) -> None:
    ingest(db, status_message("online"))
    ingest(db, status_message("offline"))
    assert nodes.list_nodes(db)[0]["state"] == "offline"
    opened = _offline_incidents(db)
    assert len(opened) == 1
    assert opened[0]["active"] is True
    ingest(db, heartbeat_message())
    closed = _offline_incidents(db)
    assert closed[0]["active"] is False
    assert closed[0]["state"] == "open"
    assert nodes.list_nodes(db)[0]["state"] == "online"


def test_heartbeat_timeout_opens_node_offline(db: Database) -> None:
    ingest(db, status_message("online"))
    apply_batch(db, [], offline_after_s=3600)
    assert nodes.list_nodes(db)[0]["state"] == "online"
    with db.transaction() as tx:
        tx.execute("UPDATE nodes SET last_seen_ms = last_seen_ms - 7200000")
    apply_batch(db, [], offline_after_s=3600)
    node = nodes.list_nodes(db)[0]
    assert node["state"] == "offline"
    assert node["state_reason"] == "heartbeat_timeout"
    assert len(_offline_incidents(db)) == 1
    apply_batch(db, [], offline_after_s=3600)
    assert len(_offline_incidents(db)) == 1


def test_incident_phases_and_workflow(db: Database) -> None:
    incident_id = str(uuid.uuid4())
    start = datetime(2024, 5, 1, 10, tzinfo=UTC)
    ingest(db, incident_message(incident_id, "start", seq=1, at=start))
    ingest(
        db,
        incident_message(incident_id, "update", seq=2, at=start + timedelta(seconds=5)),
    )
    ingest(
        db, incident_message(incident_id, "end", seq=3, at=start + timedelta(seconds=9))
    )
    ended = incidents.get(db, incident_id)
    assert ended["active"] is False
    assert ended["state"] == "open"
    incidents.acknowledge(db, incident_id, "alice", "on it")
    with pytest.raises(incidents.WorkflowError, match="is acknowledged; it can become"):
        incidents.acknowledge(db, incident_id, "bob", None)
    resolved = incidents.resolve(db, incident_id, "alice", "false alarm")
    assert resolved["state"] == "resolved"
    assert resolved["resolved"]["note"] == "false alarm"
    actions = [step["action"] for step in resolved["timeline"]]
    assert actions == ["start", "update", "end", "ack", "resolve"]


def test_incident_unknown_id(db: Database) -> None:
    with pytest.raises(incidents.IncidentNotFoundError, match="not found"):
        incidents.acknowledge(db, "nope", "alice", None)


def test_incident_filters(db: Database) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ingest(db, incident_message(first, "start", node="n1", seq=1))
    ingest(
        db,
        incident_message(second, "start", node="n2", seq=1, incident_type="loitering"),
    )
    incidents.acknowledge(db, first, "alice", None)

    def ids(**criteria: object) -> set[str]:
        found = incidents.list_incidents(db, incidents.IncidentFilter(**criteria))
        return {item["incident_id"] for item in found}

    assert ids(node="n2") == {second}
    assert ids(type="intrusion") == {first}
    assert ids(state="acknowledged") == {first}
    assert ids(state="open") == {second}


def test_events_logged_in_order(db: Database) -> None:
    incident_id = str(uuid.uuid4())
    ingest(db, status_message("online"), incident_message(incident_id, "start", seq=1))
    rows = db.query("SELECT id, type, data FROM events ORDER BY id")
    assert [row[1] for row in rows] == ["node", "incident"]
    assert json.loads(rows[1][2])["incident"]["incident_id"] == incident_id


def test_retention_deletes_old_rows(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.retention")
    old = datetime.now(UTC) - timedelta(days=50)
    ingest(
        db,
        counts_message(seq=1, start=old),
        counts_message(seq=2, start=datetime.now(UTC)),
    )
    ingest_raw(db, topic_for("s1", "n1", "counts"), b"{bad")
    with db.transaction() as tx:
        tx.execute(
            "UPDATE dead_letters SET received_ms = received_ms - ?", (40 * 86_400_000,)
        )
    deleted = apply_retention(
        db, RetentionSettings(count_rows_days=30, dead_letters_days=30)
    )
    assert deleted["count_lines"] == 1
    assert deleted["dead_letters"] == 1
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == 1
    assert "retention deleted" in caplog.text
    assert "1 count_lines" in caplog.text
    assert "1 dead_letters" in caplog.text


topics = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda site, node, leaf: f"sitlab/v1/{site}/{node}/{leaf}",
        st.sampled_from(["s1", "S!", ""]),
        st.sampled_from(["n1", "n2"]),
        st.sampled_from(
            ["counts", "status", "heartbeat", "incident", "config/state", "x"]
        ),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda message, key, value: encode({**message, key: value}),
        st.just(counts_message()),
        st.sampled_from(["lines", "seq", "site", "interval_start", "zones", "extra"]),
        json_values,
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(topic=topics, raw=payloads)
def test_fuzz_stored_or_dead_lettered(db: Database, topic: str, raw: bytes) -> None:
    before = scalar(db, "SELECT COALESCE(SUM(value), 0) FROM counters")
    item = ingest_raw(db, topic, raw)
    after = scalar(db, "SELECT COALESCE(SUM(value), 0) FROM counters")
    assert after == before + 1
    if isinstance(item, Rejected):
        assert (
            scalar(
                db, "SELECT COUNT(*) FROM dead_letters WHERE topic = ?", (item.topic,)
            )
            >= 1
        )


def test_config_state_updates_node(db: Database) -> None:
    ingest(db, status_message("online"))
    message = envelope("config_state", "s1", "n1", 0)
    message.update(request_id="r1", state="applied", config_version="v7")
    ingest(db, message)
    assert nodes.list_nodes(db)[0]["config_version"] == "v7"


def test_store_error_isolated_in_batch(db: Database) -> None:
    # Ingest rejects a seq beyond 64 bits; built by hand past those checks,
    # no database stores it, so that one message becomes a store_error.
    big = counts_message(seq=2**70)
    too_big = Accepted(
        topic=wire(big)[0], kind="counts", payload=big, received_ms=now_ms()
    )
    items = [
        classify(*wire(m), max_bytes=MAX_BYTES, keep_bytes=512, now_ms=now_ms())
        for m in (counts_message(seq=1), counts_message(seq=2))
    ]
    apply_batch(db, [items[0], too_big, items[1]])
    assert scalar(db, "SELECT COUNT(*) FROM messages") == 2
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == 2
    reasons = db.query("SELECT reason, topic FROM dead_letters")
    assert reasons == [("store_error", "sitlab/v1/s1/n1/counts")]
    assert scalar(db, "SELECT value FROM counters WHERE name = 'accepted.counts'") == 2


@pytest.mark.postgres
def test_postgres_reader_pool_bounded(postgres_database: str) -> None:
    database = PostgresDatabase(postgres_database, max_readers=2)
    results: list[list] = []

    def read() -> None:
        results.append(database.query("SELECT 1 FROM pg_sleep(0.05)"))

    threads = [threading.Thread(target=read) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    opened = len(database._all)  # noqa: SLF001 - the writer plus the readers
    database.close()
    assert len(results) == 10
    assert opened <= 3
