"""Outbox: durable sequence, send order, disk budget and kill -9 safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.messages import MessageError, utc_iso, validate
from edge.outbox import Outbox, OutboxError, merge_counts

SITE = "site-a"
NODE = "node-1"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def counts_body(minute: int, crossings: int = 1, mean: float = 1.0) -> dict[str, Any]:
    """A one-minute counts interval starting `minute` minutes after T0."""
    start = T0 + timedelta(minutes=minute)
    return {
        "interval_start": utc_iso(start),
        "interval_end": utc_iso(start + timedelta(minutes=1)),
        "frames": 600,
        "detection_frames": 300,
        "lines": [{"line": "gate", "class": "person", "in": crossings, "out": 0}],
        "zones": [
            {
                "zone": "plaza",
                "class": "person",
                "current": minute % 3,
                "max": minute % 5,
                "mean": mean,
                "entries": 1,
                "exits": 1,
            }
        ],
    }


def incident_body(phase: str, number: int = 0) -> dict[str, Any]:
    return {
        "incident_id": str(uuid.UUID(int=number)),
        "phase": phase,
        "type": "intrusion",
        "rule": "fence",
        "severity": "high",
        "started_at": utc_iso(T0),
        "detail": {"note": "x" * 40},
    }


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "outbox.db", SITE, NODE)
    yield box
    box.close()


def test_add_returns_valid_sequenced_payload(outbox: Outbox) -> None:
    first = outbox.add("counts", counts_body(0))
    second = outbox.add("incident", incident_body("start"))
    assert first["seq"] == 1
    assert second["seq"] == 2
    assert validate(first, "counts") is first
    assert first["site"] == SITE
    assert first["node"] == NODE
    assert outbox.last_seq() == 2


def test_state_reply_repeats_last_seq(outbox: Outbox) -> None:
    outbox.add("counts", counts_body(0))
    reply = outbox.add("config_state", {"request_id": "r1", "state": "applied"})
    after = outbox.add("counts", counts_body(1))
    assert reply["seq"] == 1
    assert after["seq"] == 2
    kinds = [message.kind for message in outbox.pending(10)]
    assert kinds == ["counts", "config_state", "counts"]


def test_seq_survives_reopen_and_empty_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, SITE, NODE) as box:
        payloads = [box.add("counts", counts_body(i)) for i in range(3)]
        box.remove(p["message_id"] for p in payloads)
        assert box.stats().depth == 0
    with Outbox(path, SITE, NODE) as box:
        assert box.last_seq() == 3
        assert box.add("counts", counts_body(3))["seq"] == 4


def test_outbox_of_other_node_rejected(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, SITE, NODE).close()
    with pytest.raises(OutboxError, match="belongs to site 'site-a' node 'node-1'"):
        Outbox(path, SITE, "node-2")


@pytest.mark.parametrize(
    ("kind", "body", "qos", "error", "match"),
    [
        ("heartbeat", {}, 1, OutboxError, "not stored in the outbox"),
        ("status", {"state": "online"}, 1, OutboxError, "not stored in the outbox"),
        (
            "counts",
            counts_body(0) | {"seq": 7},
            1,
            OutboxError,
            r"envelope fields \['seq'\]",
        ),
        ("counts", counts_body(0), 0, OutboxError, "qos=0"),
        ("counts", {"lines": []}, 1, MessageError, "counts message invalid"),
        ("incident", incident_body("later"), 1, MessageError, "phase"),
    ],
    ids=[
        "heartbeat",
        "status",
        "envelope-field",
        "qos-0",
        "missing-fields",
        "bad-phase",
    ],
)
def test_add_rejects_bad_request(  # noqa: PLR0917 (one argument per table column)
    outbox: Outbox,
    kind: str,
    body: dict[str, Any],
    qos: int,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        outbox.add(kind, body, qos=qos)
    assert outbox.last_seq() == 0
    assert outbox.stats().depth == 0


def test_message_larger_than_budget_rejected(tmp_path: Path) -> None:
    with (
        Outbox(tmp_path / "o.db", SITE, NODE, max_bytes=200) as box,
        pytest.raises(
            OutboxError, match="exceeds the whole outbox budget max_bytes=200"
        ),
    ):
        box.add("counts", counts_body(0))


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"max_bytes": 0}, "max_bytes=0"),
        ({"low_water_ratio": 1.5}, "low_water_ratio=1.5"),
        ({"merge_max_interval_s": 0}, "merge_max_interval_s=0"),
    ],
    ids=["max-bytes", "low-water", "merge-interval"],
)
def test_bad_limits_rejected(
    tmp_path: Path, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Outbox(tmp_path / "o.db", SITE, NODE, **arguments)


def test_pending_pages_in_order_and_skips_in_flight(outbox: Outbox) -> None:
    ids = [outbox.add("counts", counts_body(i))["message_id"] for i in range(5)]
    first_two = outbox.pending(2)
    assert [m.seq for m in first_two] == [1, 2]
    after = outbox.pending(10, after_id=first_two[-1].row_id)
    assert [m.seq for m in after] == [3, 4, 5]
    skipping = outbox.pending(2, exclude=ids[:3])
    assert [m.seq for m in skipping] == [4, 5]
    assert json.loads(first_two[0].payload)["message_id"] == ids[0]
    assert first_two[0].topic == f"sitlab/v1/{SITE}/{NODE}/counts"


def test_remove_and_stats(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox(tmp_path / "o.db", SITE, NODE, clock=lambda: now[0])
    payloads = [box.add("counts", counts_body(i)) for i in range(3)]
    now[0] = 1042.5
    stats = box.stats()
    assert stats.depth == 3
    assert stats.oldest_age_s == pytest.approx(42.5)
    assert stats.bytes == sum(len(m.payload) for m in box.pending(10))
    assert box.remove([payloads[0]["message_id"], "not-stored"]) == 1
    assert box.stats().depth == 2
    assert box.stats().as_heartbeat()["depth"] == 2
    box.close()


def test_mark_sent_counts_attempts(outbox: Outbox) -> None:
    outbox.add("counts", counts_body(0))
    row_id = outbox.pending(1)[0].row_id
    outbox.mark_sent([row_id])
    outbox.mark_sent([row_id])
    assert outbox.pending(1)[0].attempts == 2


def _stored_counts(minutes: range) -> list[dict[str, Any]]:
    payloads = []
    for seq, minute in enumerate(minutes, start=1):
        payload = {
            "schema_version": 1,
            "kind": "counts",
            "site": SITE,
            "node": NODE,
            "message_id": str(uuid.uuid4()),
            "seq": seq,
            "sent_at": utc_iso(T0),
        } | counts_body(minute, crossings=minute + 1, mean=float(minute))
        payloads.append(payload)
    return payloads


def test_merge_counts_sums_and_weights() -> None:
    parts = _stored_counts(range(3))
    parts[2]["interval_end"] = utc_iso(T0 + timedelta(minutes=4))  # 2 min long
    merged = merge_counts(parts)
    validate(merged, "counts")
    zone = merged["zones"][0]
    assert merged["interval_start"] == parts[0]["interval_start"]
    assert merged["interval_end"] == parts[2]["interval_end"]
    assert merged["lines"][0]["in"] == 1 + 2 + 3
    assert zone["entries"] == 3
    assert zone["max"] == 2
    assert zone["current"] == parts[2]["zones"][0]["current"]
    assert zone["mean"] == pytest.approx((0 * 1 + 1 * 1 + 2 * 2) / 4)
    assert merged["frames"] == 1800
    assert merged["seq"] == 1
    assert merged["message_id"] not in {p["message_id"] for p in parts}


def test_merge_counts_lists_absorbed_seqs() -> None:
    parts = _stored_counts(range(4))
    once = merge_counts(parts[:2])
    twice = merge_counts([once, *parts[2:]])
    validate(twice, "counts")
    assert once["merged_seqs"] == [2]
    assert twice["seq"] == 1
    assert twice["merged_seqs"] == [2, 3, 4]


def _speeds(n: int, mean: float, p85: float, top: float) -> dict[str, Any]:
    return {"n": n, "mean_kmh": mean, "p85_kmh": p85, "max_kmh": top}


@pytest.mark.parametrize(
    ("speeds", "expected"),
    [
        ([_speeds(4, 30.0, 35.0, 40.0), None], _speeds(4, 30.0, 35.0, 40.0)),
        (
            [_speeds(1, 20.0, 20.0, 20.0), _speeds(3, 40.0, 44.0, 50.0)],
            {"n": 4, "mean_kmh": 35.0, "max_kmh": 50.0},
        ),
        ([None, None], None),
    ],
    ids=["one-part-keeps-p85", "two-parts-exact", "no-speeds"],
)
def test_merge_counts_speed_stats(
    speeds: list[dict[str, Any] | None], expected: dict[str, Any] | None
) -> None:
    parts = _stored_counts(range(len(speeds)))
    for part, stats in zip(parts, speeds, strict=True):
        if stats is not None:
            part["lines"][0]["speed_in"] = stats
    merged = merge_counts(parts)
    validate(merged, "counts")
    assert merged["lines"][0].get("speed_in") == expected
    assert "speed_out" not in merged["lines"][0]


def test_merge_counts_unions_rows() -> None:
    parts = _stored_counts(range(2))
    parts[1]["lines"] = [{"line": "exit", "class": "car", "in": 0, "out": 4}]
    merged = merge_counts(parts)
    rows = {(r["line"], r["class"]): (r["in"], r["out"]) for r in merged["lines"]}
    assert rows == {("gate", "person"): (1, 0), ("exit", "car"): (0, 4)}


def _fill(box: Outbox, counts: int, incidents: int) -> list[dict[str, Any]]:
    stored = []
    for i in range(counts):
        stored.append(box.add("counts", counts_body(i)))
        if (
            i % max(1, counts // max(1, incidents)) == 0
            and len(stored) < counts + incidents
        ):
            phase = ("start", "update", "end")[i % 3]
            stored.append(box.add("incident", incident_body(phase, i)))
    return stored


def test_budget_merges_before_dropping(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SITE, NODE, max_bytes=40_000)
    stored = _fill(box, counts=300, incidents=20)
    stats = box.stats()
    kinds = [m.kind for m in box.pending(10_000)]
    incidents_stored = sum(p["kind"] == "incident" for p in stored)
    assert stats.bytes <= 40_000
    assert stats.merged > 200
    assert stats.dropped == 0
    assert kinds.count("incident") == incidents_stored
    merged = [json.loads(m.payload) for m in box.pending(10_000) if m.kind == "counts"]
    total_in = sum(p["lines"][0]["in"] for p in merged)
    assert total_in == 300
    box.close()


def test_budget_never_merges_sent_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SITE, NODE, max_bytes=20_000)
    for i in range(40):
        box.add("counts", counts_body(i))
    box.mark_sent(m.row_id for m in box.pending(40))
    sent_ids = {m.message_id for m in box.pending(40)}
    for i in range(40, 200):
        box.add("counts", counts_body(i))
    remaining = {m.message_id: m for m in box.pending(10_000)}
    still_sent = sent_ids & remaining.keys()
    assert box.stats().merged > 0
    assert all(json.loads(remaining[i].payload)["interval_end"] for i in still_sent)
    for message_id in still_sent:
        body = json.loads(remaining[message_id].payload)
        assert body["interval_end"] == utc_iso(
            datetime.fromisoformat(body["interval_start"].replace("Z", "+00:00"))
            + timedelta(minutes=1)
        )
    box.close()


def test_budget_drops_counts_before_incidents(tmp_path: Path) -> None:
    box = Outbox(
        tmp_path / "o.db", SITE, NODE, max_bytes=30_000, merge_max_interval_s=120
    )
    stored = _fill(box, counts=400, incidents=30)
    stats = box.stats()
    kinds = [m.kind for m in box.pending(10_000)]
    assert stats.merged > 0
    assert stats.dropped > 0
    assert kinds.count("incident") == sum(p["kind"] == "incident" for p in stored)
    assert stats.bytes <= 30_000
    box.close()


def _fill_incidents(box: Outbox) -> list[dict[str, Any]]:
    phases = ("start", "update", "update", "end")
    for i in range(60):
        box.add("incident", incident_body(phases[i % 4], i))
    return [json.loads(m.payload) for m in box.pending(1000)]


def test_budget_drops_updates_before_start_and_end(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SITE, NODE, max_bytes=16_000)
    phases = [p["phase"] for p in _fill_incidents(box)]
    assert box.stats().dropped > 0
    assert phases.count("start") == 15
    assert phases.count("end") == 15
    assert phases.count("update") < 30
    box.close()


def test_budget_drops_oldest_incidents_last(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", SITE, NODE, max_bytes=10_000)
    kept = _fill_incidents(box)
    numbers = [uuid.UUID(p["incident_id"]).int for p in kept if p["phase"] != "update"]
    assert box.stats().dropped > 30
    assert numbers == sorted(numbers)
    assert numbers[-1] == 59
    assert 0 not in numbers
    box.close()


WRITER = """
import sys
from edge.outbox import Outbox
from tests.test_outbox import counts_body
box = Outbox(sys.argv[1], "site-a", "node-1")
i = 0
while True:
    payload = box.add("counts", counts_body(i % 1000))
    sys.stdout.write(f"{payload['seq']} {payload['message_id']}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_outbox_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    rng = random.Random(7)
    confirmed: dict[int, str] = {}
    last_max = 0
    for _ in range(5):
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", WRITER, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        first = process.stdout.readline()  # wait until it writes
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        lines = [first, *process.stdout.readlines()]
        run = [(int(s), m) for s, m in (line.split() for line in lines if line.strip())]
        assert run, "writer confirmed no add before it was killed"
        assert run[0][0] == last_max + 1 or run[0][0] > last_max
        confirmed.update(run)
        last_max = max(seq for seq, _ in run)
        with Outbox(path, SITE, NODE) as box:
            stored = {m.seq: m.message_id for m in box.pending(1_000_000)}
            assert box.last_seq() >= last_max
        missing = [seq for seq, mid in confirmed.items() if stored.get(seq) != mid]
        assert missing == []
        seqs = sorted(stored)
        assert seqs == list(range(1, len(seqs) + 1))
    assert len(confirmed) > 20
