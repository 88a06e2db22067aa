"""False alarms on real clips where nothing, or only known events, should fire."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest

from edge.detector.classes import COCO80_NAMES
from edge.incidents import (
    AbandonedObjectRule,
    CrowdingRule,
    IncidentEngine,
    IncidentEvent,
    IntrusionRule,
    LoiteringRule,
    Rule,
    StoppedVehicleRule,
    TamperingDetector,
    Zone,
)
from edge.tracker import ByteTracker
from edge.types import Frame, Image
from tests.test_incidents_footage import LAWN, read_clip, replay, track_clip

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# The campus road in front of the parking bays (768x576). The parked van is
# outside it, in the bay at the top right.
CAMPUS_ROAD = Zone.from_points(
    "road",
    [(0, 190), (560, 200), (700, 120), (768, 130), (768, 300), (600, 330), (0, 230)],
)


def tud_images(media_dir: Path) -> Iterator[Image]:
    for path in sorted((media_dir / "tud_campus" / "img1").glob("*.jpg")):
        image = cv2.imread(str(path))
        assert image is not None
        yield image


def tampering_events(images: Iterator[Image], fps: float) -> list[IncidentEvent]:
    detector = TamperingDetector()
    events: list[IncidentEvent] = []
    for index, image in enumerate(images):
        t = index / fps
        events.extend(
            detector.process(Frame(image, index, t, T0 + timedelta(seconds=t)))
        )
    return events


@pytest.mark.media
@pytest.mark.parametrize(
    ("clip", "fps"),
    [
        ("pets09_s2l1_vtest/vtest.avi", 10.0),
        ("highway_pedestrian_cctv/video02.avi", 25.0),
        ("high_street_crowd/people-walking.mp4", 29.97),
        ("tud_campus", 25.0),
    ],
    ids=["campus", "motorway", "high-street", "tud-campus"],
)
def test_tampering_quiet_on_untouched_clips(
    media_dir: Path, clip: str, fps: float
) -> None:
    images = (
        tud_images(media_dir) if clip == "tud_campus" else read_clip(media_dir / clip)
    )
    assert tampering_events(images, fps) == []


def whole_view(width: int, height: int) -> Zone:
    return Zone.from_points(
        "view", [(0, 0), (width - 1, 0), (width - 1, height - 1), (0, height - 1)]
    )


def quiet_rules(width: int, height: int) -> list[Rule]:
    view = whole_view(width, height)
    return [
        AbandonedObjectRule(name="abandoned", zones=(view,), limit_s=30),
        CrowdingRule(name="crowding", zones=(view,), min_count=25, trigger_delay_s=3),
        StoppedVehicleRule(name="stopped", zones=(CAMPUS_ROAD,), limit_s=30),
        IntrusionRule(
            name="lawn", classes=frozenset({"person"}), zones=(LAWN,), trigger_delay_s=2
        ),
        LoiteringRule(
            name="loitering", classes=frozenset({"person"}), zones=(view,), limit_s=60
        ),
    ]


@pytest.mark.media
@pytest.mark.slow
def test_campus_rule_set_fires_only_known_events(
    vtest_avi: Path, model_640: Path
) -> None:
    clip = track_clip(vtest_avi, model_640, 10.0, 2, ByteTracker(10.0))
    bodies = replay(clip, IncidentEngine(quiet_rules(768, 576), COCO80_NAMES))
    starts = [body for body in bodies if body["phase"] == "start"]
    unexpected = [body for body in starts if body["rule"] != "lawn"]
    assert unexpected == []
    # Two people walk onto the lawn at about 53-56 s.
    for body in starts:
        if body["rule"] == "lawn":
            started = datetime.fromisoformat(body["started_at"].replace("Z", "+00:00"))
            assert 50 <= (started - T0).total_seconds() <= 60
