"""Incident engine plumbing: schema, schedules, evidence, source health."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, time, timedelta
from typing import Any

import cv2
import numpy as np
import pytest

from edge.detector.classes import COCO80_NAMES
from edge.incidents import (
    ArmingSchedule,
    ArmingWindow,
    EvidenceError,
    EvidenceSettings,
    HealthSettings,
    IncidentEngine,
    IntrusionRule,
    ScheduleError,
    SourceHealthMonitor,
    Zone,
    render_evidence,
)
from edge.incidents.evidence import anonymise, has_metadata
from edge.incidents.lifecycle import IncidentBook, IncidentType, Moment, Severity
from edge.messages import envelope, validate
from edge.types import Frame, Track, TrackedFrame

T0 = datetime(2026, 3, 6, 21, 59, 50, tzinfo=UTC)  # a Friday, 22:59:50 in Prague
ZONE = Zone.from_points("yard", [(100, 100), (500, 100), (500, 500), (100, 500)])
PERSON, CAR = 0, 2


def textured_image(width: int = 640, height: int = 600) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def tracked_frame(
    index: int, tracks: list[Track], image: np.ndarray | None = None
) -> TrackedFrame:
    t = index / 10.0
    frame = Frame(
        image if image is not None else np.zeros((600, 640, 3), np.uint8),
        index,
        t,
        T0 + timedelta(seconds=t),
    )
    return TrackedFrame(frame, tracks, [])


def person(track_id: int = 1, x: float = 300, y: float = 300) -> Track:
    return Track(track_id, (x - 20, y - 80, x + 20, y), PERSON, 0.9, True, True)


def with_envelope(body: dict[str, Any]) -> dict[str, Any]:
    return {**envelope("incident", "site-1", "node-1", seq=3), **body}


# --- schema -------------------------------------------------------------------


def test_engine_bodies_validate_against_schema() -> None:
    rule = IntrusionRule(
        name="yard intrusion",
        classes=frozenset({"person"}),
        zones=(ZONE,),
        evidence=True,
    )
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies = []
    for index in range(30):
        tracks = [person()] if index < 15 else [person(x=600)]
        bodies.extend(engine.process(tracked_frame(index, tracks, textured_image())))
    assert [body["phase"] for body in bodies] == ["start", "end"]
    for body in bodies:
        message = validate(with_envelope(body))
        assert message["rule"] == "yard intrusion"
    assert "evidence" in bodies[0]
    assert "evidence" not in bodies[1]
    assert "track_id" not in bodies[0].get("detail", {})


def test_book_rejects_private_detail() -> None:
    book = IncidentBook("r", IncidentType.INTRUSION, Severity.LOW, 0.0)
    with pytest.raises(ValueError, match=r"put \['xyxy'\] in an incident detail"):
        book.start("k", Moment(0.0, T0), detail={"xyxy": "1,2,3,4"})


def test_book_cooldown_blocks_restart() -> None:
    book = IncidentBook("r", IncidentType.INTRUSION, Severity.LOW, cooldown_s=10.0)
    assert book.start("k", Moment(0.0, T0)) is not None
    assert book.start("k", Moment(1.0, T0)) is None
    assert book.end("k", Moment(2.0, T0)) is not None
    assert book.start("k", Moment(11.0, T0)) is None
    assert book.start("k", Moment(12.0, T0)) is not None


# --- schedule -----------------------------------------------------------------

NIGHTS = ArmingSchedule(
    "Europe/Prague", (ArmingWindow.parse(["fri", "sat"], "23:00", "06:00"),)
)


@pytest.mark.parametrize(
    ("utc", "armed"),
    [
        (datetime(2026, 3, 6, 21, 59, tzinfo=UTC), False),  # Fri 22:59 local
        (datetime(2026, 3, 6, 22, 0, tzinfo=UTC), True),  # Fri 23:00 local
        (datetime(2026, 3, 7, 4, 59, tzinfo=UTC), True),  # Sat 05:59 local
        (datetime(2026, 3, 7, 5, 0, tzinfo=UTC), False),  # Sat 06:00 local
        (datetime(2026, 3, 8, 4, 0, tzinfo=UTC), True),  # Sun 05:00, Saturday's night
        (datetime(2026, 3, 8, 22, 30, tzinfo=UTC), False),  # Sun 23:30 local
        (
            datetime(2026, 3, 29, 3, 30, tzinfo=UTC),
            True,
        ),  # Sun 05:30 CEST, first summer day
        (datetime(2026, 3, 29, 4, 30, tzinfo=UTC), False),  # Sun 06:30 CEST
    ],
    ids=[
        "before-start",
        "at-start",
        "before-end",
        "at-end",
        "second-night",
        "sunday-off",
        "dst-still-armed",
        "dst-disarmed",
    ],
)
def test_schedule_local_windows(utc: datetime, armed: bool) -> None:
    assert NIGHTS.is_armed(utc) is armed


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ArmingSchedule(
                "Mars/Olympus", (ArmingWindow.parse(["mon"], "08:00", "09:00"),)
            ),
            "not an IANA zone",
        ),
        (
            lambda: ArmingWindow.parse(["funday"], "08:00", "09:00"),
            "weekday 'funday' is invalid",
        ),
        (
            lambda: ArmingWindow.parse(["mon"], "8 am", "09:00"),
            "time '8 am' is invalid",
        ),
        (lambda: ArmingSchedule("UTC", ()), "has no windows"),
        (
            lambda: ArmingWindow(frozenset({7}), time(1), time(2)),
            r"weekdays \[7\] are invalid",
        ),
    ],
    ids=["unknown-zone", "bad-day", "bad-time", "no-windows", "day-out-of-range"],
)
def test_schedule_errors(build: Any, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        build()


def test_disarming_ends_open_incident() -> None:
    # Armed until 23:00 local; the person stays, the incident must end at 23:00.
    evening = ArmingSchedule(
        "Europe/Prague", (ArmingWindow.parse(["fri"], "18:00", "23:00"),)
    )
    rule = IntrusionRule(
        name="yard", classes=frozenset({"person"}), zones=(ZONE,), schedule=evening
    )
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies = []
    for index in range(200):
        bodies.extend(engine.process(tracked_frame(index, [person()])))
    assert [body["phase"] for body in bodies] == ["start", "end"]
    assert bodies[1]["ended_at"] == "2026-03-06T22:00:00.000Z"


# --- evidence -----------------------------------------------------------------


def test_evidence_pixelates_every_person_box() -> None:
    image = textured_image()
    boxes = [(100.0, 100.0, 180.0, 300.0), (400.0, 50.0, 460.0, 200.0)]
    hidden = anonymise(image, boxes, [], EvidenceSettings())
    for left, top, right, bottom in boxes:
        region = hidden[int(top) : int(bottom), int(left) : int(right)]
        original = image[int(top) : int(bottom), int(left) : int(right)]
        # Pixelation to 6 cells leaves at most a few dozen distinct colours.
        assert len(np.unique(region.reshape(-1, 3), axis=0)) <= 64
        assert not np.array_equal(region, original)
    assert np.array_equal(hidden[400:, 300:], image[400:, 300:])


def test_evidence_pixelates_privacy_mask() -> None:
    image = textured_image()
    mask = [(300.0, 300.0), (600.0, 300.0), (600.0, 580.0)]
    hidden = anonymise(image, [], [mask], EvidenceSettings())
    assert not np.array_equal(hidden[320:340, 560:590], image[320:340, 560:590])
    assert np.array_equal(hidden[500:560, 320:360], image[500:560, 320:360])


def test_evidence_has_no_metadata_and_fits_cap() -> None:
    settings = EvidenceSettings(max_bytes=20_000)
    evidence = render_evidence(textured_image(1280, 720), [], [], settings)
    jpeg = base64.b64decode(evidence["data_base64"])
    assert len(jpeg) <= 20_000
    assert not has_metadata(jpeg)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[1] == evidence["width"]
    assert decoded.shape[0] == evidence["height"]


def test_has_metadata_finds_exif_segment() -> None:
    ok, buffer = cv2.imencode(".jpg", textured_image(64, 64))
    assert ok
    plain = buffer.tobytes()
    exif = b"\xff\xe1\x00\x0eExif\x00\x00MM\x00*\x00\x00"
    assert not has_metadata(plain)
    assert has_metadata(plain[:2] + exif + plain[2:])


def test_evidence_settings_reject_oversized_cap() -> None:
    with pytest.raises(EvidenceError, match="max_bytes=500000 is invalid"):
        EvidenceSettings(max_bytes=500_000)


# --- source health --------------------------------------------------------------


def test_camera_offline_and_back() -> None:
    engine = IncidentEngine([], COCO80_NAMES, health=SourceHealthMonitor())
    went = engine.on_source_state(False, T0)
    again = engine.on_source_state(False, T0 + timedelta(seconds=5))
    back = engine.on_source_state(True, T0 + timedelta(seconds=42))
    assert [body["phase"] for body in went + again + back] == ["start", "end"]
    assert back[0]["incident_id"] == went[0]["incident_id"]
    assert back[0]["type"] == "camera_offline"
    validate(with_envelope(back[0]))


def test_frame_brings_camera_back_online() -> None:
    engine = IncidentEngine([], COCO80_NAMES)
    went = engine.on_source_state(False, T0)
    back = engine.process(tracked_frame(100, []))
    assert [body["phase"] for body in went + back] == ["start", "end"]


def test_unknown_class_id_gets_placeholder_name() -> None:
    rule = IntrusionRule(name="yard", classes=frozenset({"class_99"}), zones=(ZONE,))
    engine = IncidentEngine([rule], COCO80_NAMES)
    stray = Track(1, (280.0, 220.0, 320.0, 300.0), 99, 0.9, True, True)
    bodies = engine.process(tracked_frame(0, [stray]))
    assert [body["class"] for body in bodies] == ["class_99"]


def test_evidence_off_by_default() -> None:
    rule = IntrusionRule(name="yard", classes=frozenset({"person"}), zones=(ZONE,))
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies = engine.process(tracked_frame(0, [person()], textured_image()))
    assert len(bodies) == 1
    assert "evidence" not in bodies[0]


def test_node_degraded_after_hold() -> None:
    settings = HealthSettings(
        target_fps=10, degraded_hold_s=10, recover_hold_s=5, rate_window_s=5
    )
    monitor = SourceHealthMonitor(settings)
    events = []
    t = 0.0
    while t < 120:
        slow = 20 <= t < 60
        events.extend(monitor.on_frame(Moment(t, T0 + timedelta(seconds=t))))
        t += 0.25 if slow else 0.1
    starts = [event for event in events if event.phase == "start"]
    ends = [event for event in events if event.phase == "end"]
    assert len(starts) == 1
    assert len(ends) == 1
    started_s = (starts[0].started_at - T0).total_seconds()
    assert 29 <= started_s <= 36
    assert starts[0].detail["measured_fps"] == pytest.approx(4.0, abs=0.3)


@pytest.mark.parametrize(
    ("ended_offset_s", "expected_offset_s"),
    [(-0.9, 0.0), (0.0, 0.0), (2.5, 2.5)],
    ids=["condition-stopped-before-start", "same-instant", "after-start"],
)
def test_incident_never_ends_before_it_started(
    ended_offset_s: float, expected_offset_s: float
) -> None:
    from datetime import UTC, datetime, timedelta

    from edge.incidents.lifecycle import IncidentBook, IncidentType, Moment, Severity
    from edge.messages import envelope, validate

    book = IncidentBook("fence", IncidentType("intrusion"), Severity.HIGH, 30.0)
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    start = book.start("zone", Moment(2.0, t0), zone="yard")
    assert start is not None
    end = book.end(
        "zone",
        Moment(5.0, t0 + timedelta(seconds=3)),
        t0 + timedelta(seconds=ended_offset_s),
    )
    assert end is not None
    assert end.ended_at == t0 + timedelta(seconds=expected_offset_s)
    payload = envelope("incident", "lab", "cam-01", 1) | end.to_body()
    validate(payload, "incident")
