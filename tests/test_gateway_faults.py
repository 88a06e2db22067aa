"""Faults a tester found in the gateway, one table per kind of fault."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import nodes
from gateway.api import create_app
from gateway.auth import create_token
from gateway.config import parse_config
from gateway.ingest import Accepted, Rejected, classify
from gateway.mqtt_client import should_log_attempt
from gateway.pipeline import apply_batch
from gateway.service import Gateway
from gateway.store import Database, StoreError, open_database
from gateway.timeutil import now_ms
from tests.support import gateway_fixtures
from tests.support.broker import free_port
from tests.support.gateway_fixtures import counts_message, incident_message, wire

# Fixtures shared by the gateway tests, on SQLite and PostgreSQL.
db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database

Edit = Callable[[dict[str, Any]], None]


def _classify(message: dict[str, Any]) -> Accepted | Rejected:
    return classify(*wire(message), max_bytes=10**6, keep_bytes=512, now_ms=now_ms())


def _raw_classify(message: dict[str, Any]) -> Accepted | Rejected:
    # json.dumps keeps NaN and Infinity, which encode() rejects.
    topic, _ = wire(message)
    raw = json.dumps(message).encode()
    return classify(topic, raw, max_bytes=10**6, keep_bytes=512, now_ms=now_ms())


def scalar(db: Database, sql: str, params: tuple[Any, ...] = ()) -> int:
    return int(db.query(sql, params)[0][0] or 0)


def _set(path: tuple[str | int, ...], value: Any) -> Edit:  # noqa: ANN401
    def edit(message: dict[str, Any]) -> None:
        target: Any = message
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _zone(message: dict[str, Any]) -> None:
    message["zones"] = [
        {
            "zone": "yard",
            "class": "person",
            "current": 1,
            "max": 2,
            "mean": 1.0,
            "entries": 1,
            "exits": 0,
        }
    ]


def _zone_with(key: str, value: Any) -> Edit:  # noqa: ANN401
    def edit(message: dict[str, Any]) -> None:
        _zone(message)
        message["zones"][0][key] = value

    return edit


# --- 1. integers a 64-bit column cannot hold ---------------------------------

OUT_OF_RANGE = [
    ("seq_2_70", _set(("seq",), 2**70), r"/seq = 1180591620717411303424 is outside"),
    ("seq_2_63", _set(("seq",), 2**63), r"/seq = 9223372036854775808 is outside"),
    ("line_in", _set(("lines", 0, "in"), 2**64), r"/lines/0/in = \d+ is outside"),
    ("line_out", _set(("lines", 0, "out"), 2**80), r"/lines/0/out = \d+ is outside"),
    ("zone_entries", _zone_with("entries", 2**65), r"/zones/0/entries = \d+"),
    ("zone_mean_inf", _zone_with("mean", float("inf")), r"/zones/0/mean = inf is not"),
    ("zone_mean_nan", _zone_with("mean", float("nan")), r"/zones/0/mean = nan is not"),
]


@pytest.mark.parametrize(
    ("edit", "match"),
    [(edit, match) for _, edit, match in OUT_OF_RANGE],
    ids=[case[0] for case in OUT_OF_RANGE],
)
def test_out_of_range_rejected_in_ingest(edit: Edit, match: str) -> None:
    message = counts_message()
    edit(message)
    item = _raw_classify(message)
    assert isinstance(item, Rejected), item
    assert item.reason == "out_of_range"
    assert re.search(match, item.detail), item.detail


def test_out_of_range_names_the_limit(db: Database) -> None:
    apply_batch(
        db, [_classify(counts_message(seq=1)), _classify(counts_message(seq=2**70))]
    )
    rows = db.query("SELECT reason, detail FROM dead_letters")
    assert [row[0] for row in rows] == ["out_of_range"]
    assert "-9223372036854775808..9223372036854775807" in rows[0][1]
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == 1


def test_store_error_logs_one_line(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Built by hand past ingest's checks, so the database itself rejects it.
    bad = counts_message(seq=2**70)
    item = Accepted(
        topic=wire(bad)[0], kind="counts", payload=bad, received_ms=now_ms()
    )
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        apply_batch(db, [_classify(counts_message(seq=1)), item])
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].exc_info is None
    text = loud[0].getMessage()
    assert bad["message_id"] in text
    assert "sitlab/v1/s1/n1/counts" in text
    assert (
        "OverflowError" in text
        or "NumericValueOutOfRange" in text
        or "out of range" in text
    )
    assert [r[0] for r in db.query("SELECT reason FROM dead_letters")] == [
        "store_error"
    ]


# --- 2. impossible times and intervals that run backwards ---------------------


def _incident(**fields: str) -> dict[str, Any]:
    message = incident_message(str(uuid.uuid4()), "end")
    message.update(fields)
    return message


BAD_TIMES = [
    (
        "interval_start_month_13",
        lambda: {**counts_message(), "interval_start": "2026-13-45T99:00:00Z"},
        r"/interval_start '2026-13-45T99:00:00Z' is not a valid UTC time",
    ),
    (
        "interval_end_feb_30",
        lambda: {**counts_message(), "interval_end": "2024-02-30T00:00:00Z"},
        r"/interval_end '2024-02-30T00:00:00Z' is not a valid UTC time",
    ),
    (
        "sent_at_hour_25",
        lambda: {**counts_message(), "sent_at": "2024-01-01T25:00:00Z"},
        r"/sent_at '2024-01-01T25:00:00Z' is not a valid UTC time",
    ),
    (
        "started_at_second_61",
        lambda: _incident(started_at="2024-01-01T00:00:61Z"),
        r"/started_at '2024-01-01T00:00:61Z' is not a valid UTC time",
    ),
    (
        "ended_at_day_0",
        lambda: _incident(ended_at="2024-01-00T00:00:00Z"),
        r"/ended_at '2024-01-00T00:00:00Z' is not a valid UTC time",
    ),
    (
        "interval_end_before_start",
        lambda: {**counts_message(), "interval_end": "2020-01-01T00:00:00Z"},
        r"/interval_end '2020-01-01T00:00:00Z' is before /interval_start",
    ),
    (
        "ended_before_started",
        lambda: _incident(
            started_at="2024-01-02T00:00:00Z", ended_at="2024-01-01T00:00:00Z"
        ),
        r"/ended_at '2024-01-01T00:00:00Z' is before /started_at",
    ),
    (
        "interval_in_year_9999",
        lambda: {
            **counts_message(),
            "interval_start": "9999-12-31T23:00:00Z",
            "interval_end": "9999-12-31T23:01:00Z",
        },
        r"/interval_start '9999-12-31T23:00:00Z' is outside 2000-2199",
    ),
    (
        "started_in_year_1",
        lambda: _incident(started_at="0001-01-01T00:00:00Z"),
        r"/started_at '0001-01-01T00:00:00Z' is outside 2000-2199",
    ),
    (
        "interval_of_eight_days",
        lambda: {**counts_message(), "interval_end": "2024-01-09T00:00:00Z"},
        r"is longer than 7 days",
    ),
]


@pytest.mark.parametrize(
    ("make", "match"),
    [(make, match) for _, make, match in BAD_TIMES],
    ids=[case[0] for case in BAD_TIMES],
)
def test_bad_time_dead_lettered(
    db: Database, make: Callable[[], dict[str, Any]], match: str
) -> None:
    apply_batch(db, [_classify(make())])
    rows = db.query("SELECT reason, detail FROM dead_letters")
    assert len(rows) == 1
    assert rows[0][0] == "invalid_time"
    assert re.search(match, rows[0][1]), rows[0][1]
    assert scalar(db, "SELECT COUNT(*) FROM messages") == 0
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == 0
    assert scalar(db, "SELECT COUNT(*) FROM incidents") == 0


def test_equal_interval_bounds_accepted(db: Database) -> None:
    message = counts_message(seconds=0)
    assert isinstance(_classify(message), Accepted)


# --- 3. a seq reused by a new message id ---------------------------------------

# Each step is (seq, name): the same name sends the same message again (same
# UUID, a redelivery); a new name is a new message.
SEQ_CASES = [
    ("same_seq_new_uuid", [(1, "a"), (1, "b")], 1, 1, 0),
    ("same_seq_after_more", [(1, "a"), (2, "b"), (2, "c")], 2, 1, 0),
    ("redelivery_is_duplicate", [(1, "a"), (1, "a")], 1, 0, 0),
    ("reset_then_reuse_allowed", [(1, "a"), (2, "b"), (1, "c")], 3, 0, 1),
    ("reset_then_conflict", [(3, "a"), (1, "b"), (1, "c")], 2, 1, 1),
    ("gap_fill_is_not_conflict", [(1, "a"), (3, "b"), (2, "c")], 3, 0, 0),
]


@pytest.mark.parametrize(
    ("steps", "stored", "conflicts", "resets"),
    [case[1:] for case in SEQ_CASES],
    ids=[case[0] for case in SEQ_CASES],
)
def test_seq_conflict(
    db: Database,
    steps: list[tuple[int, str]],
    stored: int,
    conflicts: int,
    resets: int,
) -> None:
    sent: dict[str, dict[str, Any]] = {}
    for seq, name in steps:
        message = sent.setdefault(name, counts_message(seq=seq))
        apply_batch(db, [_classify(message)])
    assert scalar(db, "SELECT COUNT(*) FROM count_lines") == stored
    node = nodes.list_nodes(db)[0]
    assert node["seq_conflicts"] == conflicts
    assert node["seq_resets"] == resets
    assert (node["last_seq_conflict"] is not None) == bool(conflicts)
    rows = db.query("SELECT reason, detail FROM dead_letters")
    assert [row[0] for row in rows] == ["seq_conflict"] * conflicts
    for _, detail in rows:
        assert re.search(r"seq \d+ of node s1/n1 was already used by message ", detail)
    counted = db.query(
        "SELECT value FROM counters WHERE name = 'dead_letter.seq_conflict'"
    )
    assert (int(counted[0][0]) if counted else 0) == conflicts


def test_seq_conflict_across_kinds(db: Database) -> None:
    # Counts and incidents share one outbox and one sequence per node.
    apply_batch(db, [_classify(counts_message(seq=5))])
    apply_batch(db, [_classify(incident_message(str(uuid.uuid4()), "start", seq=5))])
    assert scalar(db, "SELECT COUNT(*) FROM incidents") == 0
    assert nodes.list_nodes(db)[0]["seq_conflicts"] == 1


# --- 4. integer query parameters beyond 64 bits --------------------------------

HUGE = "99999999999999999999999"


@pytest.fixture
def client(db: Database) -> TestClient:
    return TestClient(create_app(db, parse_config({})))


@pytest.fixture
def admin(db: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, 'admin', 'test-admin')}"}


BAD_STREAM_POSITIONS = [
    ("after_huge", {"after": HUGE}, {}, rf"after '{HUGE}' is not an event id"),
    ("after_negative", {"after": "-1"}, {}, r"after '-1' is not an event id"),
    ("after_text", {"after": "abc"}, {}, r"after 'abc' is not an event id"),
    (
        "header_huge",
        {},
        {"Last-Event-ID": HUGE},
        rf"Last-Event-ID '{HUGE}' is not an event id",
    ),
    ("header_text", {}, {"Last-Event-ID": "abc"}, r"Last-Event-ID 'abc' is not"),
]


@pytest.mark.parametrize(
    ("params", "headers", "match"),
    [case[1:] for case in BAD_STREAM_POSITIONS],
    ids=[case[0] for case in BAD_STREAM_POSITIONS],
)
def test_stream_position_range_400(
    client: TestClient,
    admin: dict[str, str],
    params: dict[str, str],
    headers: dict[str, str],
    match: str,
) -> None:
    response = client.get("/api/v1/stream", params=params, headers=admin | headers)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert re.search(match, detail), detail
    assert "from 0 to 9223372036854775807" in detail


BAD_INTEGERS = [
    ("incidents_offset", "GET", f"/api/v1/incidents?offset={HUGE}"),
    ("incidents_limit", "GET", f"/api/v1/incidents?limit={HUGE}"),
    ("dead_letters_offset", "GET", f"/api/v1/dead-letters?offset={HUGE}"),
    ("dead_letters_limit", "GET", f"/api/v1/dead-letters?limit={HUGE}"),
    ("token_id", "DELETE", f"/api/v1/tokens/{HUGE}"),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [case[1:] for case in BAD_INTEGERS],
    ids=[case[0] for case in BAD_INTEGERS],
)
def test_integer_parameters_bounded(
    client: TestClient, admin: dict[str, str], method: str, path: str
) -> None:
    response = client.request(method, path, headers=admin)
    assert response.status_code == 422
    assert re.search(r"less than or equal to \d+", response.text), response.text


# --- 5. a broker that cannot be reached ----------------------------------------

LOGGED_ATTEMPTS = [
    ("first", 1, True),
    ("second", 2, False),
    ("ninth", 9, False),
    ("tenth", 10, True),
    ("eleventh", 11, False),
    ("twentieth", 20, True),
]


@pytest.mark.parametrize(
    ("attempt", "logged"),
    [case[1:] for case in LOGGED_ATTEMPTS],
    ids=[case[0] for case in LOGGED_ATTEMPTS],
)
def test_failed_attempts_rate_limited(attempt: int, logged: bool) -> None:
    assert should_log_attempt(attempt) is logged


def test_unreachable_broker_degrades_healthz(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens here
    config = parse_config({"mqtt": {"url": f"mqtt://127.0.0.1:{port}"}})
    gateway = Gateway(config, db)
    with caplog.at_level(logging.INFO, logger="gateway.mqtt_client"):
        gateway.start()
        try:
            deadline = time.monotonic() + 10
            while gateway.mqtt.failed_attempts < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            client = TestClient(create_app(db, config, gateway.status))
            response = client.get("/healthz")
        finally:
            gateway.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert re.search(
        rf"cannot connect to broker 127\.0\.0\.1:{port} \(attempt 1\): .*refused",
        warnings[0].getMessage(),
    ), warnings[0].getMessage()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["mqtt_connected"] is False
    assert body["mqtt_failed_attempts"] >= 1


# --- 6. a SQLite path whose folder does not exist ------------------------------


def _missing(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "nonexistent" / "dir", tmp_path / "nonexistent"


def _a_file(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "plain").write_text("not a folder")
    return tmp_path / "plain", tmp_path / "plain"


BAD_FOLDERS = [
    ("missing_folder", _missing, "does not exist"),
    ("folder_is_a_file", _a_file, "is not a folder"),
]


@pytest.mark.parametrize(
    ("make", "what"),
    [case[1:] for case in BAD_FOLDERS],
    ids=[case[0] for case in BAD_FOLDERS],
)
def test_sqlite_folder_must_exist(
    tmp_path: Path, make: Callable[[Path], tuple[Path, Path]], what: str
) -> None:
    folder, top = make(tmp_path)
    path = folder / "x.db"
    with pytest.raises(
        StoreError,
        match=rf"its folder {re.escape(str(folder))} {what}; create it \(mkdir -p ",
    ):
        open_database(f"sqlite:///{path}")
    assert not path.exists()
    assert top.is_file() or not top.exists()


def test_sqlite_file_is_created(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'new.db'}")
    database.close()
    assert (tmp_path / "new.db").is_file()


def test_default_relative_store_opens_in_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default store url is relative; on a fresh checkout the working
    # folder exists, so the default still opens.
    monkeypatch.chdir(tmp_path)
    database = open_database(parse_config({}).store.url)
    database.close()
    assert (tmp_path / "sitlab-gateway.db").is_file()


# --- 7. the API description needs a token like every other route ---------------

DESCRIPTION_ROUTES = [
    ("openapi", "/openapi.json", 401, None),
    ("docs", "/docs", 401, None),
    ("redoc", "/redoc", 404, None),
    ("openapi_viewer", "/openapi.json", 200, "viewer"),
    ("docs_viewer", "/docs", 200, "viewer"),
]


@pytest.mark.parametrize(
    ("path", "status", "role"),
    [case[1:] for case in DESCRIPTION_ROUTES],
    ids=[case[0] for case in DESCRIPTION_ROUTES],
)
def test_api_description_needs_viewer(
    client: TestClient, db: Database, path: str, status: int, role: str | None
) -> None:
    headers = {}
    if role is not None:
        headers["Authorization"] = f"Bearer {create_token(db, role, 'test')}"
    response = client.get(path, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert re.search(r"authentication required", response.json()["detail"])
    if path == "/openapi.json" and status == 200:
        paths = response.json()["paths"]
        assert "/api/v1/counts" in paths
        assert "/openapi.json" not in paths
    if path == "/docs" and status == 200:
        assert "swagger-ui" in response.text
        assert "/openapi.json" in response.text


def test_docs_with_session_cookie(client: TestClient, db: Database) -> None:
    # A browser that logged in sends the session cookie, also for the
    # schema the Swagger UI page loads.
    client.cookies.set("sitlab_session", create_token(db, "viewer", "browser"))
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_huge_integer_dead_lettered(db: Database) -> None:
    topic, _ = wire(counts_message())
    raw = b'{"schema_version":1,"seq":' + b"9" * 5000 + b"}"
    item = classify(topic, raw, max_bytes=10**6, keep_bytes=512, now_ms=now_ms())
    apply_batch(db, [item])
    rows = db.query("SELECT reason, detail FROM dead_letters")
    assert rows[0][0] == "invalid_json"
    assert "digits" in rows[0][1]


def test_failing_check_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: Any) -> None:  # noqa: ANN401
        raise KeyError("unforeseen")

    monkeypatch.setattr("gateway.ingest._check_merged_seqs", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.ingest"):
        item = _classify(counts_message())
    assert isinstance(item, Rejected)
    assert item.reason == "check_failed"
    assert "KeyError" in item.detail
    assert "ingest check failed" in caplog.text


@pytest.mark.parametrize(
    ("site", "node", "phase", "rejected"),
    [
        ("s1", "n2", "end", True),
        ("s2", "n1", "update", True),
        ("s1", "n1", "end", False),
    ],
    ids=["other-node-ends", "other-site-updates", "owner-ends"],
)
def test_incident_of_another_node_rejected(
    db: Database, site: str, node: str, phase: str, rejected: bool
) -> None:
    incident_id = str(uuid.uuid4())
    apply_batch(db, [_classify(incident_message(incident_id, "start"))])
    later = incident_message(incident_id, phase, site=site, node=node, seq=2)
    apply_batch(db, [_classify(later)])
    active = scalar(
        db, "SELECT active FROM incidents WHERE incident_id = ?", (incident_id,)
    )
    reasons = [row[0] for row in db.query("SELECT reason FROM dead_letters")]
    assert reasons == (["incident_owner"] if rejected else [])
    assert active == (1 if rejected or phase != "end" else 0)


def test_huge_integer_detail_shortened() -> None:
    message = counts_message()
    message["lines"][0]["in"] = 10**400
    item = _classify(message)
    assert isinstance(item, Rejected)
    assert item.reason == "out_of_range"
    assert "(401 digits)" in item.detail
    assert len(item.detail) < 200
