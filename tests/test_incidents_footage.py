"""Incident rules on real clips through the real detector and tracker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.detector import Detector
from edge.detector.classes import COCO80_NAMES
from edge.incidents import (
    CrowdingRule,
    IncidentEngine,
    IntrusionRule,
    TamperingDetector,
    Zone,
)
from edge.messages import envelope, validate
from edge.tracker import ByteTracker
from edge.types import Detections, Frame, Image, Track, TrackedFrame

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
VEHICLES = frozenset({"car", "bus", "truck", "motorcycle"})

# Right hard shoulder of the motorway clip (320x240): between the solid lane
# edge line and the barrier, from the bottom of the view to the far end.
SHOULDER = Zone.from_points(
    "right shoulder", [(232, 240), (302, 35), (319, 35), (319, 240)]
)
# The paved street of the high-street clip (1280x720), from the far
# pedestrians' feet to the bottom of the view.
STREET = Zone.from_points("street", [(0, 420), (1280, 420), (1280, 720), (0, 720)])
# The lawn in the lower left of the campus clip (768x576); empty on frame 120.
LAWN = Zone.from_points("lawn", [(0, 320), (330, 320), (440, 576), (0, 576)])


@dataclass(frozen=True, slots=True)
class TrackedClip:
    """Tracker output of a clip, without the images."""

    fps: float
    resolution_wh: tuple[int, int]
    frames: list[tuple[bool, list[Track], list[int]]]


def read_clip(path: Path) -> Iterator[Image]:
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield image
    finally:
        capture.release()


def track_clip(
    path: Path, model: Path, fps: float, detect_every: int, tracker: ByteTracker
) -> TrackedClip:
    """Detect on every `detect_every`-th frame and track all frames."""
    detector = Detector(model, confidence=0.2)
    frames: list[tuple[bool, list[Track], list[int]]] = []
    resolution = (0, 0)
    for index, image in enumerate(read_clip(path)):
        resolution = (image.shape[1], image.shape[0])
        ran = index % detect_every == 0
        detections = detector.detect(image) if ran else Detections.empty()
        tracks, ended = tracker.update(detections, index / fps, ran)
        frames.append((ran, tracks, ended))
    return TrackedClip(fps, resolution, frames)


def replay(clip: TrackedClip, engine: IncidentEngine) -> list[dict[str, Any]]:
    width, height = clip.resolution_wh
    blank = np.zeros((height, width, 3), np.uint8)
    bodies: list[dict[str, Any]] = []
    for index, (ran, tracks, ended) in enumerate(clip.frames):
        t = index / clip.fps
        frame = Frame(blank, index, t, T0 + timedelta(seconds=t), ran)
        bodies.extend(engine.process(TrackedFrame(frame, tracks, ended)))
    return bodies


def frame_of(clip: TrackedClip, body: dict[str, Any], field: str) -> float:
    moment = datetime.fromisoformat(body[field].replace("Z", "+00:00"))
    return (moment - T0).total_seconds() * clip.fps


@pytest.fixture(scope="module")
def motorway(media_dir: Path, model_640: Path) -> TrackedClip:
    # The cyclist is 10-16 px wide on this feed and YOLOv8n scores it 0.2-0.6,
    # so the tracker accepts lower scores and keeps lost tracks for 2 s.
    tracker = ByteTracker(
        25.0, high_threshold=0.3, new_track_threshold=0.4, lost_track_buffer_s=2.0
    )
    path = media_dir / "highway_pedestrian_cctv" / "video02.avi"
    return track_clip(path, model_640, 25.0, 2, tracker)


@pytest.fixture(scope="module")
def high_street(media_dir: Path, model_640: Path) -> TrackedClip:
    tracker = ByteTracker(29.97, high_threshold=0.4, new_track_threshold=0.5)
    path = media_dir / "high_street_crowd" / "people-walking.mp4"
    return track_clip(path, model_640, 29.97, 3, tracker)


@pytest.mark.media
@pytest.mark.slow
def test_cyclist_on_shoulder_raises_one_intrusion(motorway: TrackedClip) -> None:
    people = IntrusionRule(
        name="shoulder people",
        classes=frozenset({"person"}),
        zones=(SHOULDER,),
        trigger_delay_s=1.0,
        exit_grace_s=3.0,
    )
    vehicles = IntrusionRule(
        name="shoulder vehicles",
        classes=VEHICLES,
        zones=(SHOULDER,),
        trigger_delay_s=1.0,
    )
    bodies = replay(motorway, IncidentEngine([people, vehicles], COCO80_NAMES))
    assert [
        body["rule"] for body in bodies if body["rule"] == "shoulder vehicles"
    ] == []
    starts = [body for body in bodies if body["phase"] == "start"]
    ends = [body for body in bodies if body["phase"] == "end"]
    assert len(starts) == 1
    assert len(ends) == 1
    assert starts[0]["class"] == "person"
    assert 90 <= frame_of(motorway, starts[0], "started_at") <= 510
    assert frame_of(motorway, ends[0], "ended_at") <= 530
    for body in bodies:
        validate({**envelope("incident", "site-1", "node-1", seq=1), **body})


@pytest.mark.media
@pytest.mark.slow
def test_high_street_crowding_at_ten(high_street: TrackedClip) -> None:
    ten = CrowdingRule(
        name="crowd 10", zones=(STREET,), min_count=10, trigger_delay_s=1.0
    )
    thirty = CrowdingRule(
        name="crowd 30", zones=(STREET,), min_count=30, trigger_delay_s=1.0
    )
    bodies = replay(high_street, IncidentEngine([ten, thirty], COCO80_NAMES))
    starts = [body for body in bodies if body["phase"] == "start"]
    assert len(starts) == 1
    assert starts[0]["rule"] == "crowd 10"
    assert starts[0]["zone"] == "street"
    assert starts[0]["detail"]["count"] >= 10
    assert [body for body in bodies if body["phase"] == "end"] == []


def night_switch_views(scene: Image) -> list[Image]:
    """The colour view at luma 60, a flash at 200 and the greyscale view at 110."""

    def with_luma(image: Image, mean: float) -> Image:
        grey_mean = float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean())
        return cv2.convertScaleAbs(image, alpha=mean / grey_mean)

    grey = cv2.cvtColor(cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return [with_luma(scene, 60), with_luma(scene, 200), with_luma(grey, 110)]


@pytest.mark.media
def test_infrared_switch_raises_no_intrusion(vtest_avi: Path, model_640: Path) -> None:
    capture = cv2.VideoCapture(str(vtest_avi))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 120)
    ok, scene = capture.read()
    capture.release()
    assert ok
    views = night_switch_views(scene)
    detector = Detector(model_640, confidence=0.2)
    # The scene is still, so each of the three views is detected once.
    detections = [detector.detect(view) for view in views]
    tracker = ByteTracker(10.0)
    lawn = IntrusionRule(
        name="lawn", classes=frozenset({"person"}), zones=(LAWN,), trigger_delay_s=1.0
    )
    engine = IncidentEngine([lawn], COCO80_NAMES, tampering=TamperingDetector())
    bodies: list[dict[str, Any]] = []
    for index in range(300):
        number = index + 1
        if number <= 50:
            view = 0
        elif number <= 53:
            view = 1
        else:
            view = 2
        tracks, ended = tracker.update(detections[view], index / 10.0)
        t = index / 10.0
        frame = Frame(views[view], index, t, T0 + timedelta(seconds=t))
        bodies.extend(engine.process(TrackedFrame(frame, tracks, ended)))
    assert bodies == []
