"""Counts figures the gateway must not store, and bucket sums that must not fail.

Hand-made counts messages with a mean speed of 1.7e308 km/h or 9e18
crossings per interval once made `GET /api/v1/counts` fail, and one with a
`merged_seqs` entry of 2**63 - 1 reported a gap of 9.2e18 messages. Each
table below covers one kind of fault, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import nodes
from gateway.api import create_app
from gateway.auth import create_token
from gateway.config import parse_config
from gateway.counts import store_counts
from gateway.ingest import classify
from gateway.pipeline import apply_batch
from gateway.store import Database
from gateway.timeutil import now_ms
from tests.support import gateway_fixtures
from tests.support.gateway_fixtures import counts_message, wire

# Fixtures shared by the gateway tests, on SQLite and PostgreSQL.
db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database

Edit = Callable[[dict[str, Any]], None]
INT64_MAX = 2**63 - 1
START = datetime(2024, 1, 1, 10, tzinfo=UTC)


def ingest(db: Database, *messages: dict[str, Any]) -> None:
    apply_batch(
        db,
        [
            classify(*wire(m), max_bytes=10**6, keep_bytes=256, now_ms=now_ms())
            for m in messages
        ],
    )


def dead_letters(db: Database) -> list[tuple[str, str]]:
    return [
        (str(reason), str(detail))
        for reason, detail in db.query(
            "SELECT reason, detail FROM dead_letters ORDER BY id"
        )
    ]


def stored_lines(db: Database) -> int:
    return int(db.query("SELECT COUNT(*) FROM count_lines")[0][0])


def speed(n: int, mean: float, p85: float | None, top: float) -> dict[str, Any]:
    stats: dict[str, Any] = {"n": n, "mean_kmh": mean, "max_kmh": top}
    if p85 is not None:
        stats["p85_kmh"] = p85
    return stats


def line(**fields: Any) -> Edit:  # noqa: ANN401
    """Set fields of the message's first line row, which counts 5 in and 5 out."""

    def edit(message: dict[str, Any]) -> None:
        message["lines"][0].update({"in": 5, "out": 5, **fields})

    return edit


def zone(**fields: Any) -> Edit:  # noqa: ANN401
    """Add one zone row with plausible figures, then set `fields` on it."""

    def edit(message: dict[str, Any]) -> None:
        row = {
            "zone": "yard",
            "class": "person",
            "current": 1,
            "max": 2,
            "mean": 1.5,
            "entries": 3,
            "exits": 2,
        }
        message["zones"] = [row | fields]

    return edit


def top(**fields: Any) -> Edit:  # noqa: ANN401
    """Set top-level fields of the message."""

    def edit(message: dict[str, Any]) -> None:
        message.update(fields)

    return edit


def ingest_edited(db: Database, edit: Edit) -> None:
    """Ingest one counts message after `edit` changed it."""
    message = counts_message(start=START)
    edit(message)
    ingest(db, message)


# --- 1. figures beyond the plausible bounds of counts.json --------------------

HUGE_SPEED = 1.7e308
BEYOND_BOUNDS = [
    (
        "speed_mean_1e308",
        line(speed_in=speed(3, HUGE_SPEED, 25.0, 30.0)),
        r"lines/0/speed_in/mean_kmh: 1\.7e\+308 is greater than the maximum of 1000",
    ),
    (
        "speed_max_over_1000",
        line(speed_out=speed(3, 20.0, 25.0, 1000.5)),
        r"lines/0/speed_out/max_kmh: 1000\.5 is greater than the maximum of 1000",
    ),
    (
        "speed_p85_over_1000",
        line(speed_in=speed(3, 20.0, 1001.0, 30.0)),
        r"lines/0/speed_in/p85_kmh: 1001\.0 is greater than the maximum of 1000",
    ),
    (
        "speed_n_over_1e9",
        line(speed_in=speed(10**9 + 1, 20.0, 25.0, 30.0)),
        r"lines/0/speed_in/n: 1000000001 is greater than the maximum of 1000000000",
    ),
    (
        "line_in_9e18",
        line(**{"in": 9 * 10**18}),
        r"lines/0/in: 9000000000000000000 is greater than the maximum of 1000000000",
    ),
    (
        "line_out_over_1e9",
        line(out=10**9 + 1),
        r"lines/0/out: 1000000001 is greater than the maximum",
    ),
    ("zone_entries", zone(entries=9 * 10**18), r"zones/0/entries: 9000000000000000000"),
    ("zone_exits", zone(exits=10**9 + 1), r"zones/0/exits: 1000000001 is greater"),
    ("zone_current", zone(current=10**9 + 1), r"zones/0/current: 1000000001 is"),
    ("zone_max", zone(max=10**9 + 1), r"zones/0/max: 1000000001 is greater"),
    ("zone_mean", zone(mean=HUGE_SPEED), r"zones/0/mean: 1\.7e\+308 is greater"),
    ("frames", top(frames=10**9 + 1), r"at frames: 1000000001 is greater"),
    (
        "detection_frames",
        top(detection_frames=INT64_MAX),
        r"at detection_frames: 9223372036854775807 is greater",
    ),
]


@pytest.mark.parametrize(
    ("edit", "match"),
    [case[1:] for case in BEYOND_BOUNDS],
    ids=[case[0] for case in BEYOND_BOUNDS],
)
def test_figure_beyond_bound_dead_lettered(
    db: Database, edit: Edit, match: str
) -> None:
    ingest_edited(db, edit)
    letters = dead_letters(db)
    assert [reason for reason, _ in letters] == ["schema"]
    assert re.search(match, letters[0][1]), letters[0][1]
    assert stored_lines(db) == 0


AT_BOUNDS = [
    ("line_in_1e9", line(**{"in": 10**9, "out": 10**9})),
    ("speed_1000", line(speed_in=speed(2, 1000.0, 1000.0, 1000.0))),
    ("zone_counts_1e9", zone(current=10**9, max=10**9, mean=1e9, entries=10**9)),
    ("frames_1e9", top(frames=10**9, detection_frames=10**9)),
]


@pytest.mark.parametrize(
    "edit", [case[1] for case in AT_BOUNDS], ids=[case[0] for case in AT_BOUNDS]
)
def test_figure_at_bound_accepted(db: Database, edit: Edit) -> None:
    ingest_edited(db, edit)
    assert dead_letters(db) == []
    assert stored_lines(db) == 1


# --- 2. speed and zone figures that contradict each other ---------------------

CONTRADICTIONS = [
    (
        "p85_above_max",
        line(speed_in=speed(3, 20.0, 31.0, 30.0)),
        r"/lines/0/speed_in/p85_kmh = 31\.0 exceeds /lines/0/speed_in/max_kmh = 30\.0",
    ),
    (
        "mean_above_max",
        line(speed_out=speed(3, 30.02, 25.0, 30.0)),
        r"/lines/0/speed_out/mean_kmh = 30\.02 exceeds /lines/0/speed_out/max_kmh = "
        r"30\.0",
    ),
    (
        "merged_mean_above_max",
        line(speed_in=speed(4, 45.0, None, 40.0)),
        r"/lines/0/speed_in/mean_kmh = 45\.0 exceeds /lines/0/speed_in/max_kmh",
    ),
    (
        "single_mean_not_max",
        line(speed_in=speed(1, 20.0, 30.0, 30.0)),
        r"/lines/0/speed_in/mean_kmh = 20\.0 differs from /lines/0/speed_in/max_kmh "
        r"= 30\.0, but with n = 1",
    ),
    (
        "single_p85_not_max",
        line(speed_in=speed(1, 30.0, 20.0, 30.0)),
        r"/lines/0/speed_in/p85_kmh = 20\.0 differs from /lines/0/speed_in/max_kmh "
        r"= 30\.0, but with n = 1",
    ),
    (
        "zone_current_above_max",
        zone(current=3, max=2),
        r"/zones/0/current = 3 exceeds /zones/0/max = 2",
    ),
    (
        "zone_mean_above_max",
        zone(mean=2.5, max=2),
        r"/zones/0/mean = 2\.5 exceeds /zones/0/max = 2",
    ),
]


@pytest.mark.parametrize(
    ("edit", "match"),
    [case[1:] for case in CONTRADICTIONS],
    ids=[case[0] for case in CONTRADICTIONS],
)
def test_contradicting_figures_dead_lettered(
    db: Database, edit: Edit, match: str
) -> None:
    ingest_edited(db, edit)
    letters = dead_letters(db)
    assert [reason for reason, _ in letters] == ["schema"]
    assert re.search(match, letters[0][1]), letters[0][1]
    assert stored_lines(db) == 0


CONSISTENT = [
    ("ordered", line(speed_in=speed(3, 20.0, 25.0, 30.0))),
    ("mean_above_p85", line(speed_in=speed(3, 28.0, 27.0, 30.0))),
    ("mean_max_within_rounding", line(speed_in=speed(3, 30.01, 25.0, 30.0))),
    ("p85_max_within_rounding", line(speed_out=speed(3, 20.0, 30.01, 30.0))),
    ("single_crossing", line(speed_in=speed(1, 36.0, 36.0, 36.0))),
    ("single_within_rounding", line(speed_in=speed(1, 35.99, 36.0, 36.0))),
    ("merged_without_p85", line(speed_in=speed(4, 30.0, None, 40.0))),
    ("zone_current_at_max", zone(current=2, max=2, mean=2.0)),
    ("zone_mean_float_noise", zone(max=2, mean=2.0000000000000004)),
]


@pytest.mark.parametrize(
    "edit", [case[1] for case in CONSISTENT], ids=[case[0] for case in CONSISTENT]
)
def test_consistent_figures_accepted(db: Database, edit: Edit) -> None:
    ingest_edited(db, edit)
    assert dead_letters(db) == []
    assert stored_lines(db) == 1


# --- 3. merged_seqs and seq jumps ---------------------------------------------

BAD_MERGED_SEQS = [
    ("int64_max", [INT64_MAX], r"/merged_seqs/0 = 9223372036854775807 is more than"),
    ("beyond_bound", [11, 10_000_011], r"/merged_seqs/1 = 10000011 is more than"),
    ("not_increasing", [12, 11], r"/merged_seqs/1 = 11 does not follow 12"),
    ("repeated", [11, 11], r"/merged_seqs/1 = 11 does not follow 11"),
    ("equal_to_seq", [10, 11], r"/merged_seqs/0 = 10 is not above /seq = 10"),
    ("below_seq", [3], r"/merged_seqs/0 = 3 is not above /seq = 10"),
]


@pytest.mark.parametrize(
    ("merged", "match"),
    [case[1:] for case in BAD_MERGED_SEQS],
    ids=[case[0] for case in BAD_MERGED_SEQS],
)
def test_bad_merged_seqs_dead_lettered(
    db: Database, merged: list[int], match: str
) -> None:
    first = counts_message(seq=9, start=START)
    message = counts_message(seq=10, start=START + timedelta(minutes=1))
    message["merged_seqs"] = merged
    ingest(db, first, message)
    letters = dead_letters(db)
    assert [reason for reason, _ in letters] == ["schema"]
    assert re.search(match, letters[0][1]), letters[0][1]
    node = nodes.list_nodes(db)[0]
    assert node["last_seq"] == 9
    assert node["missing_messages"] == 0


def test_merged_seqs_at_bound_accepted(db: Database) -> None:
    message = counts_message(seq=10, start=START)
    message["merged_seqs"] = [11, 10_000_010]
    ingest(db, message)
    assert dead_letters(db) == []
    node = nodes.list_nodes(db)[0]
    assert node["last_seq"] == 10_000_010
    assert node["missing_messages"] == 10_000_010 - 12


# Each case lists the seqs sent in order, then the node's resets, last seq
# and open gaps as (first, last) pairs.
SEQ_JUMPS = [
    ("jump_at_bound", [1, 10_000_001], 0, 10_000_001, [(2, 10_000_000)]),
    ("jump_beyond_bound", [1, 10_000_002], 1, 10_000_002, []),
    ("int64_max_then_back", [1, INT64_MAX, 2, 4], 2, 4, [(3, 3)]),
    ("int64_max_first", [INT64_MAX, 1, 3], 1, 3, [(2, 2)]),
]


@pytest.mark.parametrize(
    ("seqs", "resets", "last", "gaps"),
    [case[1:] for case in SEQ_JUMPS],
    ids=[case[0] for case in SEQ_JUMPS],
)
def test_seq_jump_beyond_bound_is_reset(
    db: Database,
    seqs: list[int],
    resets: int,
    last: int,
    gaps: list[tuple[int, int]],
) -> None:
    for index, seq in enumerate(seqs):
        ingest(db, counts_message(seq=seq, start=START + timedelta(minutes=index)))
    assert dead_letters(db) == []
    assert stored_lines(db) == len(seqs)
    node = nodes.list_nodes(db)[0]
    assert node["seq_resets"] == resets
    assert node["last_seq"] == last
    assert [(gap["first_seq"], gap["last_seq"]) for gap in node["seq_gaps"]] == gaps
    assert node["missing_messages"] == sum(b - a + 1 for a, b in gaps)


# --- 4. bucket sums over rows that an older gateway stored --------------------


def store_raw(db: Database, *messages: dict[str, Any]) -> None:
    """Store count rows without the ingest checks, as an older gateway did."""
    with db.transaction() as tx:
        for message in messages:
            store_counts(tx, message)


def legacy_lines(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    messages = []
    for index, fields in enumerate(rows):
        message = counts_message(seq=index + 1, start=START)
        message["lines"][0].update(fields)
        messages.append(message)
    return messages


def legacy_zones(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    messages = []
    for index, fields in enumerate(rows):
        message = counts_message(seq=index + 1, start=START)
        zone(**fields)(message)
        messages.append(message)
    return messages


@pytest.fixture
def client(db: Database) -> TestClient:
    token = create_token(db, "viewer", "test-viewer")
    test_client = TestClient(create_app(db, parse_config({})))
    test_client.headers["Authorization"] = f"Bearer {token}"
    return test_client


BIG = 9 * 10**18
VALID_SPEED = speed(2, 20.0, 25.0, 30.0)
# Each case lists the stored messages, the bucket field to check in the JSON
# and the value expected there, with None for a field that is left out.
LEGACY_ROWS = [
    ("two_rows_in_9e18", legacy_lines({"in": BIG}, {"in": BIG}), "in", 2 * BIG),
    (
        "out_near_int64_max",
        legacy_lines({"out": INT64_MAX}, {"out": INT64_MAX}, {"out": 5}),
        "out",
        2 * INT64_MAX + 5,
    ),
    (
        "speed_mean_1e308",
        legacy_lines({"speed_in": speed(3, HUGE_SPEED, HUGE_SPEED, HUGE_SPEED)}),
        "speed_in",
        None,
    ),
    (
        "speed_mean_1e308_beside_valid",
        legacy_lines(
            {"speed_in": speed(3, HUGE_SPEED, 25.0, HUGE_SPEED)},
            {"speed_in": VALID_SPEED},
        ),
        "speed_in",
        VALID_SPEED,
    ),
    (
        "speed_n_int64_max",
        legacy_lines(
            {"in": INT64_MAX, "speed_out": speed(INT64_MAX, 999.0, 999.0, 999.0)},
            {"speed_out": VALID_SPEED},
        ),
        "speed_out",
        VALID_SPEED,
    ),
    (
        "zone_entries_9e18",
        legacy_zones({"entries": BIG}, {"entries": BIG}),
        "entries",
        2 * BIG,
    ),
    ("zone_mean_1e308", legacy_zones({"mean": HUGE_SPEED}, {"mean": 1.5}), "mean", 1.5),
    ("zone_mean_only_1e308", legacy_zones({"mean": HUGE_SPEED}), "mean", 0.0),
]


@pytest.mark.parametrize(
    ("messages", "field", "expected"),
    [case[1:] for case in LEGACY_ROWS],
    ids=[case[0] for case in LEGACY_ROWS],
)
def test_counts_api_survives_legacy_rows(
    db: Database,
    client: TestClient,
    messages: list[dict[str, Any]],
    field: str,
    expected: Any,  # noqa: ANN401
) -> None:
    store_raw(db, *messages)
    kind = "zones" if field in ("entries", "mean") else "lines"
    window = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    response = client.get("/api/v1/counts", params=window | {"kind": kind})
    assert response.status_code == 200, response.text
    buckets = response.json()[kind]
    assert len(buckets) == 1
    assert buckets[0].get(field) == expected
    text = client.get("/api/v1/counts.csv", params=window | {"kind": kind})
    assert text.status_code == 200, text.text
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == 1
    cells = {cell.lower() for cell in rows[0].values()}
    assert not cells & {"inf", "-inf", "nan"}, rows[0]
    if isinstance(expected, int):
        assert rows[0][field] == str(expected)


def test_huge_mean_leaves_api_working(db: Database, client: TestClient) -> None:
    # Valid in every other respect, so the gateway accepted it before.
    message = counts_message(seq=1, start=START)
    line(speed_in=speed(3, HUGE_SPEED, 25.0, 30.0))(message)
    ingest(db, message, counts_message(seq=2, start=START + timedelta(minutes=1)))
    response = client.get("/api/v1/counts", params={"kind": "lines"})
    assert response.status_code == 200, response.text
    buckets = response.json()["lines"]
    assert [bucket["in"] for bucket in buckets] == [1]
    assert "speed_in" not in buckets[0]
    assert client.get("/healthz").status_code == 200
