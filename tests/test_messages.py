"""Message contract: topics, envelopes and validation errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge import messages
from edge.messages import MessageError, Topic, describe_json_error, validate


def counts_payload(**changes: Any) -> dict[str, Any]:
    payload = messages.envelope("counts", "lab", "cam-01", 1)
    payload.update(
        interval_start="2026-01-01T10:00:00Z",
        interval_end="2026-01-01T10:01:00Z",
        lines=[{"line": "door", "class": "person", "in": 1, "out": 0}],
        zones=[],
    )
    payload.update(changes)
    return payload


def test_valid_counts_message_passes() -> None:
    assert validate(counts_payload(), "counts")["seq"] == 1


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"bogus": 1}, r"'bogus' was unexpected"),
        ({"site": "Lab/1"}, r"at site: 'Lab/1' does not match"),
        ({"seq": -1}, r"at seq: -1 is less than the minimum"),
        ({"seq": 2**70}, r"at seq: .* greater than the maximum of 9223372036854775807"),
        ({"schema_version": 2}, r"unknown schema_version 2"),
        ({"kind": "status"}, r"payload kind 'status' does not match topic kind"),
        ({"interval_end": "2026-13-45T99:00:00Z"}, r"is not a 'date-time'"),
        ({"interval_end": "2026-01-01T09:00:00Z"}, r"interval_end: .* is before"),
        (
            {"lines": [{"line": "d", "class": "p", "in": 1.5, "out": 0}]},
            r"lines/0/in: 1.5 is not of type 'integer'",
        ),
        (
            {
                "zones": [
                    {
                        "zone": "z",
                        "class": "p",
                        "current": 0,
                        "max": 0,
                        "mean": float("nan"),
                        "entries": 0,
                        "exits": 0,
                    }
                ]
            },
            r"zones/0/mean: nan is not a finite number",
        ),
    ],
    ids=[
        "unknown-field",
        "site-not-topic-safe",
        "negative-seq",
        "seq-beyond-64-bit",
        "unknown-version",
        "kind-mismatch",
        "impossible-date",
        "interval-ends-before-start",
        "fractional-count",
        "nan-mean",
    ],
)
def test_invalid_counts_message_names_field(
    changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(MessageError, match=match):
        validate(counts_payload(**changes), "counts")


@pytest.mark.parametrize(
    "detail",
    [{"track_id": 7}, {"bbox": "1,2,3,4"}, {"trajectory": "x"}],
    ids=["track-id", "bbox", "trajectory"],
)
def test_incident_detail_rejects_tracking_keys(detail: dict[str, Any]) -> None:
    payload = messages.envelope("incident", "lab", "cam-01", 2)
    payload.update(
        incident_id="5c0e2bb4-8a4e-4a43-9a43-7f0b1b9e6d10",
        phase="start",
        type="intrusion",
        rule="fence",
        severity="high",
        started_at="2026-01-01T10:00:00Z",
        detail=detail,
    )
    with pytest.raises(MessageError, match="detail"):
        validate(payload, "incident")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("sitlab/v1/lab/cam-01/counts", Topic("lab", "cam-01", "counts")),
        ("sitlab/v1/lab/cam-01/config/state", Topic("lab", "cam-01", "config/state")),
    ],
    ids=["counts", "nested-leaf"],
)
def test_topic_parse_round_trip(topic: str, expected: Topic) -> None:
    assert Topic.parse(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    "topic",
    ["other/v1/lab/cam/counts", "sitlab/v1/lab", "sitlab/v1//cam/counts"],
    ids=["wrong-root", "too-short", "empty-site"],
)
def test_topic_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(MessageError, match="topic"):
        Topic.parse(topic)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"seq": ' + b"9" * 5000 + b"}", "an integer has more than 4300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, "it nests too deeply"),
        (b"{", "Expecting property name"),
    ],
    ids=["huge-integer", "deep-nesting", "syntax"],
)
def test_json_error_described(payload: bytes, reason: str) -> None:
    with pytest.raises((ValueError, RecursionError)) as caught:
        json.loads(payload)
    assert reason in describe_json_error(caught.value)
