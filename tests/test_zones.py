"""Zone occupancy, entries and exits with debounce in stream time."""

from __future__ import annotations

import pytest

from edge.analytics.geometry import Point, Polygon
from edge.analytics.zones import ZoneEvent, ZoneMonitor, ZoneTransition
from edge.types import Track

ENTER, EXIT = ZoneTransition.ENTER, ZoneTransition.EXIT

# Zone x 100..300, y 100..300; anchors are bottom centres.
SQUARE = Polygon(
    (Point(100, 100), Point(300, 100), Point(300, 300), Point(100, 300)),
    name="zone 'lobby'",
)


def track(
    x: float,
    y: float,
    *,
    track_id: int = 1,
    class_id: int = 0,
    confirmed: bool = True,
    detected: bool = True,
) -> Track:
    return Track(
        track_id, (x - 10, y - 50, x + 10, y), class_id, 0.9, confirmed, detected
    )


def monitor(**kwargs) -> ZoneMonitor:
    options = {"enter_debounce_s": 0.3, "exit_debounce_s": 0.5} | kwargs
    return ZoneMonitor("lobby", SQUARE, **options)


def run(
    zone: ZoneMonitor, ys: list[float], *, fps: float = 10.0, **kwargs
) -> list[ZoneEvent]:
    """Feed one track at x=200 through `ys`, one frame each."""
    events: list[ZoneEvent] = []
    for index, y in enumerate(ys):
        events += zone.update([track(200, y, **kwargs)], index / fps)
    return events


def kinds(events: list[ZoneEvent]) -> list[ZoneTransition]:
    return [event.transition for event in events]


@pytest.mark.parametrize(
    ("ys", "expected", "occupied"),
    [
        ([320, 310, 299, 301, 299, 301, 299, 301, 299, 301], [], 0),
        ([320, 290, 280, 270, 260, 301, 290, 301, 290, 301], [ENTER], 1),
        ([320, 290, 280, 270, 260, 320, 330, 340, 350, 360, 370], [ENTER, EXIT], 0),
        ([320, 290, 280, 320, 290, 280, 270, 260], [ENTER], 1),
        ([320, 290, 320, 290, 320, 290, 320], [], 0),
    ],
    ids=[
        "jitter on boundary from outside",
        "jitter on boundary from inside",
        "enter then leave",
        "short visit below enter debounce restarts",
        "alternating never settles",
    ],
)
def test_debounce(ys, expected, occupied):
    zone = monitor()
    events = run(zone, ys)
    assert kinds(events) == expected
    assert zone.occupancy().get(0, 0) == occupied


def test_event_times_are_debounced_times():
    zone = monitor()
    events = run(zone, [320, 290, 280, 270, 260, 320, 330, 340, 350, 360, 370])
    assert [round(event.pts_s, 3) for event in events] == [0.4, 1.0]


def test_zero_debounce_follows_every_frame():
    zone = monitor(enter_debounce_s=0, exit_debounce_s=0)
    assert kinds(run(zone, [320, 290, 320])) == [ENTER, EXIT]


def test_boundary_point_is_inside():
    zone = monitor(enter_debounce_s=0)
    assert kinds(run(zone, [320, 300])) == [ENTER]


def test_born_inside_has_no_entry_but_is_occupant():
    zone = monitor()
    assert run(zone, [200, 210, 220]) == []
    assert zone.occupancy() == {0: 1}


def test_ended_track_leaves_without_exit():
    zone = monitor()
    run(zone, [200, 210])
    zone.forget([1])
    assert zone.occupancy() == {}
    assert zone.tracked_count == 0


@pytest.mark.parametrize(
    ("frames", "occupancy"),
    [
        ([(200, True, True), (200, False, True), (200, False, True)], {0: 1}),
        ([(200, True, True), (400, True, False), (400, True, False)], {0: 1}),
        ([(400, True, True), (200, True, False), (200, True, False)], {}),
    ],
    ids=[
        "detector skipped frames keep occupant",
        "coasting prediction outside keeps occupant",
        "coasting prediction inside adds nobody",
    ],
)
def test_frames_without_detection_keep_state(frames, occupancy):
    zone = monitor(enter_debounce_s=0, exit_debounce_s=0)
    for index, (y, ran, detected) in enumerate(frames):
        events = zone.update(
            [track(200, y, detected=detected)], index, detection_ran=ran
        )
        assert events == []
    assert zone.occupancy() == occupancy


def test_absent_track_stays_until_forgotten():
    zone = monitor()
    zone.update([track(200, 200)], 0.0)
    zone.update([], 1.0)
    assert zone.occupancy() == {0: 1}


@pytest.mark.parametrize(
    ("frames", "expected", "occupied"),
    [
        (
            [(320, False), (290, False), (280, False), (270, False), (260, True)],
            [ENTER],
            1,
        ),
        ([(320, False), (290, False), (280, False), (270, False)], [], 0),
        (
            [(320, False)] + [(290, False)] * 4 + [(330, False)] * 6 + [(340, True)],
            [],
            0,
        ),
    ],
    ids=[
        "entry held until confirmed",
        "unconfirmed occupant not counted",
        "entered and left before confirmation",
    ],
)
def test_unconfirmed_tracks(frames, expected, occupied):
    zone = monitor()
    events: list[ZoneEvent] = []
    for index, (y, confirmed) in enumerate(frames):
        events += zone.update([track(200, y, confirmed=confirmed)], index / 10)
    assert kinds(events) == expected
    assert zone.occupancy().get(0, 0) == occupied


def test_occupancy_per_class_and_filter():
    zone = monitor(classes={0, 2})
    tracks = [
        track(150, 200, track_id=1, class_id=0),
        track(200, 200, track_id=2, class_id=0),
        track(250, 200, track_id=3, class_id=2),
        track(260, 200, track_id=4, class_id=7),
        track(400, 200, track_id=5, class_id=0),
    ]
    zone.update(tracks, 0.0)
    assert zone.occupancy() == {0: 2, 2: 1}


def test_class_filter_drops_events():
    zone = monitor(classes={0}, enter_debounce_s=0)
    assert run(zone, [320, 290], class_id=3) == []


def test_state_is_bounded():
    zone = monitor(max_tracks=2)
    zone.update([track(200, 200, track_id=i) for i in range(5)], 0.0)
    assert zone.tracked_count == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"enter_debounce_s": -0.1},
            r"zone 'lobby' enter_debounce_s must be >= 0 seconds",
        ),
        (
            {"exit_debounce_s": float("nan")},
            r"zone 'lobby' exit_debounce_s must be >= 0",
        ),
        ({"max_tracks": 0}, r"zone 'lobby' max_tracks must be >= 1, got 0"),
    ],
    ids=["negative enter debounce", "nan exit debounce", "no track room"],
)
def test_invalid_zone(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZoneMonitor("lobby", SQUARE, **kwargs)
