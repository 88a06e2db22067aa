"""The verify report: counts, crossing speeds and incidents of a run."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from calibration.cli import positive_seconds
from calibration.verify import VerifyReport, _CountsCollector, format_table
from edge.sinks import NullSink


def _counts(**speeds: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"line": "gate", "class": "car", "in": 3, "out": 1}
    row.update(speeds)
    return {
        "interval_start": "2026-12-04T10:00:00.000Z",
        "interval_end": "2026-12-04T10:01:00.000Z",
        "lines": [row],
        "zones": [],
    }


def _incident(phase: str) -> dict[str, Any]:
    return {
        "incident_id": "6d7b3c1e-0000-4000-8000-000000000001",
        "phase": phase,
        "type": "speeding",
        "rule": "road-speeding",
        "severity": "medium",
        "started_at": "2026-12-04T10:00:10.000Z",
        **({"ended_at": "2026-12-04T10:00:12.000Z"} if phase == "end" else {}),
    }


FAST = {"n": 2, "mean_kmh": 40.0, "p85_kmh": 44.0, "max_kmh": 45.0}
SLOW = {"n": 2, "mean_kmh": 20.0, "p85_kmh": 22.0, "max_kmh": 25.0}


@pytest.mark.parametrize(
    ("messages", "expected", "absent"),
    [
        ([("counts", _counts())], ["gate  car    3"], ["km/h", "started"]),
        (
            [("counts", _counts(speed_in=FAST)), ("counts", _counts(speed_in=SLOW))],
            ["gate  car    in         4  30.0       45.0"],
            ["started"],
        ),
        (
            [("incident", _incident("start")), ("incident", _incident("end"))],
            ["road-speeding  speeding  1"],
            ["km/h"],
        ),
    ],
    ids=["counts-only", "speeds-merged", "incident-started-once"],
)
def test_verify_table_sections(
    messages: list[tuple[str, dict[str, Any]]], expected: list[str], absent: list[str]
) -> None:
    report = VerifyReport()
    collector = _CountsCollector(NullSink("lab", "cam-01"), report)
    for kind, body in messages:
        collector.send(kind, body)
    collector.close()
    table = format_table(report)
    for text in expected:
        assert text in table
    for text in absent:
        assert text not in table


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("30", True),
        ("0.5", True),
        ("0", False),
        ("-1", False),
        ("nan", False),
        ("inf", False),
        ("1e400", False),
        ("ten", False),
    ],
    ids=[
        "whole",
        "fraction",
        "zero",
        "negative",
        "nan",
        "infinity",
        "overflow",
        "word",
    ],
)
def test_seconds_argument_checked(text: str, accepted: bool) -> None:
    if accepted:
        assert positive_seconds(text) == float(text)
        return
    with pytest.raises(argparse.ArgumentTypeError):
        positive_seconds(text)
