"""Count buckets in UTC and local zones across daylight saving, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.aggregate import CountQuery, QueryError, bucket_start, run_query
from gateway.ingest import classify
from gateway.pipeline import apply_batch
from gateway.store import Database
from gateway.timeutil import now_ms, to_ms
from tests.support import gateway_fixtures
from tests.support.gateway_fixtures import counts_message, wire

SYDNEY = ZoneInfo("Australia/Sydney")

# Fixtures shared by the gateway tests, on SQLite and PostgreSQL.
db = gateway_fixtures.db
db_url = gateway_fixtures.db_url
postgres_database = gateway_fixtures.postgres_database


def ingest_events(db: Database, starts: list[datetime], seconds: int = 60) -> None:
    items = []
    for seq, start in enumerate(starts, 1):
        message = counts_message(seq=seq, start=start, seconds=seconds)
        items.append(
            classify(*wire(message), max_bytes=10**6, keep_bytes=64, now_ms=now_ms())
        )
    apply_batch(db, items)


def events_every_hour(first: datetime, last: datetime) -> list[datetime]:
    """Return minute 15 and 45 of every real hour from `first` up to `last`."""
    found, hour = [], first.astimezone(UTC)
    while hour < last:
        found += [hour + timedelta(minutes=15), hour + timedelta(minutes=45)]
        hour += timedelta(hours=1)
    return found


def hourly(
    db: Database, first: datetime, last: datetime, bucket: str = "1h"
) -> list[tuple[str, int]]:
    query = CountQuery(
        bucket=bucket,
        tz="Australia/Sydney",
        from_ms=to_ms(first),
        to_ms=to_ms(last),
        kind="lines",
    )
    return [(row["bucket_start"], row["in"]) for row in run_query(db, query)["lines"]]


def test_sydney_dst_end_repeats_hour(db: Database) -> None:
    first = datetime.fromisoformat("2024-04-07T00:00:00+11:00")
    last = datetime.fromisoformat("2024-04-07T05:00:00+10:00")
    ingest_events(db, events_every_hour(first, last))
    assert hourly(db, first, last) == [
        ("2024-04-07T00:00:00+11:00", 2),
        ("2024-04-07T01:00:00+11:00", 2),
        ("2024-04-07T02:00:00+11:00", 2),
        ("2024-04-07T02:00:00+10:00", 2),
        ("2024-04-07T03:00:00+10:00", 2),
        ("2024-04-07T04:00:00+10:00", 2),
    ]
    assert hourly(db, first, last, "1d") == [("2024-04-07T00:00:00+11:00", 12)]


def test_sydney_dst_start_skips_hour(db: Database) -> None:
    first = datetime.fromisoformat("2024-10-06T00:00:00+10:00")
    last = datetime.fromisoformat("2024-10-06T05:00:00+11:00")
    ingest_events(db, events_every_hour(first, last))
    assert hourly(db, first, last) == [
        ("2024-10-06T00:00:00+10:00", 2),
        ("2024-10-06T01:00:00+10:00", 2),
        ("2024-10-06T03:00:00+11:00", 2),
        ("2024-10-06T04:00:00+11:00", 2),
    ]
    assert hourly(db, first, last, "1d") == [("2024-10-06T00:00:00+10:00", 8)]


def test_local_day_has_25_hours(db: Database) -> None:
    day_start = datetime(2024, 4, 7, tzinfo=SYDNEY)
    day_end = datetime(2024, 4, 8, tzinfo=SYDNEY)
    assert day_end - day_start == timedelta(hours=24)  # wall clock arithmetic
    real_hours = (to_ms(day_end) - to_ms(day_start)) // 3_600_000
    assert real_hours == 25
    events = events_every_hour(day_start, day_end)
    ingest_events(db, events)
    rows = hourly(db, day_start, day_end)
    assert len(rows) == 25
    assert hourly(db, day_start, day_end, "1d") == [("2024-04-07T00:00:00+11:00", 50)]


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("1m", [("2024-01-01T10:00:00+00:00", 1), ("2024-01-01T10:01:00+00:00", 1)]),
        ("15m", [("2024-01-01T10:00:00+00:00", 2), ("2024-01-01T10:15:00+00:00", 1)]),
        ("1h", [("2024-01-01T10:00:00+00:00", 3)]),
    ],
    ids=["minute", "quarter", "hour"],
)
def test_utc_buckets(db: Database, bucket: str, expected: list) -> None:
    base = datetime(2024, 1, 1, 10, tzinfo=UTC)
    ingest_events(db, [base, base + timedelta(minutes=1), base + timedelta(minutes=20)])
    end = base + timedelta(minutes=2) if bucket == "1m" else base + timedelta(hours=1)
    query = CountQuery(
        bucket=bucket, from_ms=to_ms(base), to_ms=to_ms(end), kind="lines"
    )
    rows = run_query(db, query)["lines"]
    assert [(row["bucket_start"], row["in"]) for row in rows] == expected


def test_zone_bucket_figures(db: Database) -> None:
    base = datetime(2024, 1, 1, 10, tzinfo=UTC)
    zone = {"zone": "yard", "class": "person", "entries": 2, "exits": 1}
    messages = [
        counts_message(
            seq=1, start=base, zones=[{**zone, "current": 1, "max": 3, "mean": 1.0}]
        ),
        counts_message(
            seq=2,
            start=base + timedelta(minutes=1),
            zones=[{**zone, "current": 4, "max": 5, "mean": 3.0}],
        ),
    ]
    items = [
        classify(*wire(m), max_bytes=10**6, keep_bytes=64, now_ms=now_ms())
        for m in messages
    ]
    apply_batch(db, items)
    rows = run_query(db, CountQuery(bucket="1h", kind="zones"))["zones"]
    assert rows == [
        {
            "bucket_start": "2024-01-01T10:00:00+00:00",
            "site": "s1",
            "node": "n1",
            "zone": "yard",
            "class": "person",
            "entries": 4,
            "exits": 2,
            "max": 5,
            "mean": 2.0,
            "current": 4,
        }
    ]


@pytest.mark.parametrize(
    ("instant", "bucket", "label"),
    [
        ("2024-04-06T15:30:00Z", "1h", "2024-04-07T02:00:00+11:00"),
        ("2024-04-06T16:30:00Z", "1h", "2024-04-07T02:00:00+10:00"),
        ("2024-04-06T16:50:00Z", "15m", "2024-04-07T02:45:00+10:00"),
        ("2024-04-07T13:59:00Z", "1d", "2024-04-07T00:00:00+11:00"),
        ("2024-04-07T14:00:00Z", "1d", "2024-04-08T00:00:00+10:00"),
    ],
    ids=["first_2am", "second_2am", "quarter", "day_end", "next_day"],
)
def test_bucket_labels(instant: str, bucket: str, label: str) -> None:
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    assert bucket_start(to_ms(moment), bucket, SYDNEY).isoformat() == label


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (CountQuery(bucket="2h"), "bucket '2h' is invalid; use one of 1m, 15m, 1h, 1d"),
        (CountQuery(tz="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (CountQuery(direction="up"), "direction 'up' is invalid"),
        (CountQuery(from_ms=5, to_ms=5), "from must be earlier than to"),
    ],
    ids=["bucket", "tz", "direction", "range"],
)
def test_query_errors(query: CountQuery, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        query.check()


def speed(n: int, mean: float, p85: float, maximum: float) -> dict[str, float]:
    return {"n": n, "mean_kmh": mean, "p85_kmh": p85, "max_kmh": maximum}


SLOW = speed(2, 10.0, 12.0, 14.0)
FAST = speed(3, 20.0, 25.0, 30.0)
NO_SPEEDS: dict[str, dict] = {}

# Each case lists the speed objects of consecutive line rows of one key, the
# bucket query and the speed objects expected on the single bucket row.
SPEED_MERGES = [
    (
        "two_intervals",
        [{"speed_in": SLOW}, {"speed_in": FAST}],
        CountQuery(bucket="1h", kind="lines"),
        {"speed_in": {"n": 5, "mean_kmh": 16.0, "max_kmh": 30.0}},
    ),
    (
        "two_slices_local_zone",
        [{"speed_in": SLOW, "speed_out": SLOW}, {"speed_in": FAST}],
        CountQuery(bucket="1h", tz="Australia/Sydney", kind="lines"),
        {
            "speed_in": {"n": 5, "mean_kmh": 16.0, "max_kmh": 30.0},
            "speed_out": {"n": 2, "mean_kmh": 10.0, "p85_kmh": 12.0, "max_kmh": 14.0},
        },
    ),
    (
        "single_interval",
        [{"speed_out": FAST}],
        CountQuery(bucket="1h", kind="lines"),
        {"speed_out": {"n": 3, "mean_kmh": 20.0, "p85_kmh": 25.0, "max_kmh": 30.0}},
    ),
    (
        "one_interval_with_speeds",
        [NO_SPEEDS, {"speed_in": SLOW}],
        CountQuery(bucket="1h", kind="lines"),
        {"speed_in": {"n": 2, "mean_kmh": 10.0, "p85_kmh": 12.0, "max_kmh": 14.0}},
    ),
    (
        "mean_float_noise",
        [{"speed_in": speed(3, 12.3, 13.0, 14.0)}],
        CountQuery(bucket="1h", kind="lines"),
        {"speed_in": {"n": 3, "mean_kmh": 12.3, "p85_kmh": 13.0, "max_kmh": 14.0}},
    ),
    (
        "direction_filter",
        [{"speed_in": SLOW, "speed_out": FAST}],
        CountQuery(bucket="1h", direction="out", kind="lines"),
        {"speed_out": {"n": 3, "mean_kmh": 20.0, "p85_kmh": 25.0, "max_kmh": 30.0}},
    ),
    (
        "rows_without_speeds",
        [NO_SPEEDS, NO_SPEEDS],
        CountQuery(bucket="1h", kind="lines"),
        {},
    ),
]


@pytest.mark.parametrize(
    ("rows", "query", "expected"),
    [case[1:] for case in SPEED_MERGES],
    ids=[case[0] for case in SPEED_MERGES],
)
def test_line_speed_buckets(
    db: Database, rows: list[dict], query: CountQuery, expected: dict
) -> None:
    # 10:00 and 10:20 UTC fall in one UTC hour but in two 15-minute slices of
    # one local hour.
    base = datetime(2024, 1, 1, 10, tzinfo=UTC)
    items = []
    for seq, speeds in enumerate(rows, 1):
        message = counts_message(
            seq=seq,
            start=base + timedelta(minutes=20 * (seq - 1)),
            lines=[("gate", "car", 5, 5)],
        )
        message["lines"][0].update(speeds)
        items.append(
            classify(*wire(message), max_bytes=10**6, keep_bytes=64, now_ms=now_ms())
        )
    apply_batch(db, items)
    buckets = run_query(db, query)["lines"]
    assert len(buckets) == 1
    found = {key: value for key, value in buckets[0].items() if "speed" in key}
    assert found == expected
