"""Interval aggregation and the Analytics facade."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.analytics import (
    Analytics,
    CountsInterval,
    Direction,
    FrameCounts,
    GeometryError,
    IntervalCounter,
    LineRow,
    LineSpec,
    Point,
    ReferenceFrame,
    ZoneRow,
    ZoneSpec,
    ZoneTransition,
)
from edge.messages import envelope, validate
from edge.types import Frame, Track, TrackedFrame

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
IN, OUT = Direction.IN, Direction.OUT
ENTER, EXIT = ZoneTransition.ENTER, ZoneTransition.EXIT


def frame_counts(pts_s: float, **kwargs) -> FrameCounts:
    return FrameCounts(pts_s, T0 + timedelta(seconds=pts_s), **kwargs)


def occupancy_run(
    samples: list[tuple[float, int]], interval_s: float = 10.0
) -> list[CountsInterval]:
    counter = IntervalCounter({}, {"lobby": ["person"]}, interval_s=interval_s)
    closed: list[CountsInterval] = []
    for pts_s, value in samples:
        occupancy = {"lobby": {"person": value}}
        closed += counter.add_frame(frame_counts(pts_s, occupancy=occupancy))
    final = counter.flush()
    assert final is not None
    return [*closed, final]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (
            [(0, 1), (2, 3), (5, 0), (8, 2), (10, 2), (12, 1), (15, 4)],
            [(2, 3, 1.5), (4, 4, 1.4)],
        ),
        ([(0, 2), (9, 5), (13, 1)], [(5, 5, 2.3), (1, 5, 5.0)]),
        ([(0, 0), (25, 3)], [(0, 0, 0.0), (0, 0, 0.0), (3, 3, 0.0)]),
        ([(4, 7)], [(7, 7, 7.0)]),
    ],
    ids=[
        "steps inside two intervals",
        "value carried across boundary",
        "empty interval in a gap",
        "single frame",
    ],
)
def test_occupancy_statistics(samples, expected):
    intervals = occupancy_run(samples)
    rows = [interval.zones[0] for interval in intervals]
    assert [(row.current, row.max) for row in rows] == [(c, m) for c, m, _ in expected]
    assert [row.mean for row in rows] == pytest.approx(
        [mean for _, _, mean in expected]
    )


def test_boundaries_follow_first_frame():
    counter = IntervalCounter({"door": ["person"]}, {}, interval_s=10.0)
    closed: list[CountsInterval] = []
    for pts_s in (3.5, 8.0, 13.4, 13.5, 20.0, 23.6):
        closed += counter.add_frame(frame_counts(pts_s))
    assert [interval.start for interval in closed] == [
        T0 + timedelta(seconds=3.5),
        T0 + timedelta(seconds=13.5),
    ]
    assert [interval.end for interval in closed] == [
        T0 + timedelta(seconds=13.5),
        T0 + timedelta(seconds=23.5),
    ]
    assert [interval.frames for interval in closed] == [3, 2]
    assert counter.interval_start_s == pytest.approx(23.5)


def test_frame_times_with_rounding_land_on_boundary():
    counter = IntervalCounter({}, {}, interval_s=1.0)
    closed: list[CountsInterval] = []
    for index in range(31):
        closed += counter.add_frame(frame_counts(index * 0.1))
    assert [interval.frames for interval in closed] == [10, 10, 10]


def test_line_rows_zero_filled_per_class_and_direction():
    counter = IntervalCounter(
        {"door": ["person", "bicycle"], "gate": ["car"]}, {}, interval_s=60
    )
    crossings = [
        ("door", "person", IN),
        ("door", "person", IN),
        ("door", "person", OUT),
    ]
    counter.add_frame(frame_counts(0.0, crossings=crossings))
    counter.add_frame(frame_counts(1.0, detection_ran=False))
    counter.add_frame(frame_counts(2.0, crossings=[("gate", "car", OUT)]))
    interval = counter.flush()
    assert interval is not None
    assert interval.lines == (
        LineRow("door", "person", 2, 1),
        LineRow("door", "bicycle", 0, 0),
        LineRow("gate", "car", 0, 1),
    )
    assert interval.frames == 3
    assert interval.detection_frames == 2


def test_zone_entries_and_exits_per_interval():
    counter = IntervalCounter({}, {"lobby": ["person"]}, interval_s=10)
    counter.add_frame(frame_counts(0, zone_events=[("lobby", "person", ENTER)]))
    closed = counter.add_frame(
        frame_counts(11, zone_events=[("lobby", "person", EXIT)] * 2)
    )
    last = counter.flush()
    assert last is not None
    assert [(row.entries, row.exits) for row in closed[0].zones] == [(1, 0)]
    assert [(row.entries, row.exits) for row in last.zones] == [(0, 2)]


def test_flush_then_nothing_left():
    counter = IntervalCounter({"door": ["person"]}, {}, interval_s=10)
    assert counter.flush() is None
    counter.add_frame(frame_counts(0.0))
    counter.add_frame(frame_counts(4.0))
    interval = counter.flush()
    assert interval is not None
    assert interval.end - interval.start == timedelta(seconds=4)
    assert counter.flush() is None


def test_clock_jump_skips_empty_intervals(caplog):
    counter = IntervalCounter({}, {}, interval_s=10, max_skipped_intervals=5)
    counter.add_frame(frame_counts(0.0))
    with caplog.at_level(logging.WARNING):
        closed = counter.add_frame(frame_counts(1000.0))
    assert len(closed) == 1
    assert counter.interval_start_s == pytest.approx(1000.0)
    assert "stream time jumped 1000.0 s ahead (100 intervals of 10 s)" in caplog.text


def test_backwards_time_is_clamped(caplog):
    counter = IntervalCounter({}, {"lobby": ["person"]}, interval_s=10)
    counter.add_frame(frame_counts(5.0, occupancy={"lobby": {"person": 1}}))
    with caplog.at_level(logging.WARNING):
        counter.add_frame(frame_counts(4.0, occupancy={"lobby": {"person": 3}}))
    interval = counter.flush()
    assert interval is not None
    assert interval.frames == 2
    assert interval.zones[0].max == 3
    assert "went backwards from 5.000 s to 4.000 s" in caplog.text


def test_missing_zone_keeps_last_occupancy():
    counter = IntervalCounter({}, {"lobby": ["person"]}, interval_s=10)
    counter.add_frame(frame_counts(0.0, occupancy={"lobby": {"person": 2}}))
    counter.add_frame(frame_counts(5.0))
    interval = counter.flush()
    assert interval is not None
    assert interval.zones[0] == ZoneRow("lobby", "person", 2, 2, 2.0, 0, 0)


def test_set_rows_keeps_counts_of_current_interval():
    counter = IntervalCounter({"old": ["person"]}, {"hall": ["person"]}, interval_s=10)
    counter.add_frame(
        frame_counts(
            0.0,
            crossings=[("old", "person", IN)],
            occupancy={"hall": {"person": 2}},
        )
    )
    counter.add_frame(frame_counts(5.0, occupancy={"hall": {"person": 2}}))
    counter.set_rows({"new": ["person"]}, {})
    first = counter.add_frame(frame_counts(10.0))[0]
    second = counter.flush()
    assert second is not None
    assert [row.line for row in first.lines] == ["new", "old"]
    assert first.lines[1].in_count == 1
    assert first.zones == (ZoneRow("hall", "person", 0, 2, 1.0, 0, 0),)
    assert [row.line for row in second.lines] == ["new"]
    assert second.zones == ()


@pytest.mark.parametrize(
    "interval_s", [0, -5, float("nan")], ids=["zero", "negative", "nan"]
)
def test_invalid_interval(interval_s):
    with pytest.raises(ValueError, match="interval_s must be a positive number"):
        IntervalCounter({}, {}, interval_s=interval_s)


def test_naive_capture_time_rejected():
    counter = IntervalCounter({}, {})
    naive = FrameCounts(0.0, datetime(2026, 3, 1, 8, 0, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="is naive; pass a timezone-aware UTC time"):
        counter.add_frame(naive)


def test_fields_match_counts_schema():
    counter = IntervalCounter(
        {"door": ["person"]}, {"lobby": ["person"]}, interval_s=10
    )
    counter.add_frame(
        frame_counts(
            0.0, crossings=[("door", "person", IN)], occupancy={"lobby": {"person": 1}}
        )
    )
    counter.add_frame(frame_counts(3.0, occupancy={"lobby": {"person": 0}}))
    interval = counter.flush()
    assert interval is not None
    payload = envelope("counts", "site-a", "node-1", 7) | interval.to_fields()
    assert validate(payload, "counts") is payload
    assert payload["interval_start"] == "2026-03-01T08:00:00.000Z"
    assert payload["lines"] == [{"line": "door", "class": "person", "in": 1, "out": 0}]
    assert payload["zones"][0]["mean"] == 1.0


# --- Analytics facade ---------------------------------------------------------

CLASSES = ["person", "bicycle", "car"]
REFERENCE = ReferenceFrame.pixels([1280, 720])


def person(track_id: int, x: float, y: float, **kwargs) -> Track:
    options = {"confirmed": True, "detected": True, "class_id": 0} | kwargs
    return Track(
        track_id,
        (x - 20, y - 100, x + 20, y),
        options["class_id"],
        0.9,
        options["confirmed"],
        options["detected"],
    )


def tracked(
    index: int, tracks: list[Track], *, fps: float = 10.0, wh=(2560, 1440), ended=()
):
    image = np.zeros((wh[1], wh[0], 3), dtype=np.uint8)
    frame = Frame(image, index, index / fps, T0 + timedelta(seconds=index / fps))
    return TrackedFrame(frame, tracks, list(ended))


def facade(**kwargs) -> Analytics:
    lines = [LineSpec("door", Point(0, 500), Point(1280, 500), hysteresis_px=10)]
    zones = [
        ZoneSpec(
            "bottom right",
            (Point(640, 360), Point(1280, 360), Point(1280, 720), Point(640, 720)),
        )
    ]
    options = {
        "reference": REFERENCE,
        "class_names": CLASSES,
        "detector_classes": ["person", "car"],
        "interval_s": 1.0,
    } | kwargs
    return Analytics(lines, zones, **options)


def test_facade_counts_on_scaled_stream():
    analytics = facade()
    closed: list[CountsInterval] = []
    # Line y=500 in the reference is y=1000 on the 2560x1440 stream.
    for index, y in enumerate([900, 960, 995, 1005, 1040, 1100]):
        closed += analytics.update(
            tracked(index, [person(1, 400, y), person(2, 1920, 1200)])
        )
    final = analytics.flush()
    assert closed == []
    assert final is not None
    assert analytics.resolution_wh == (2560, 1440)
    assert final.lines == (
        LineRow("door", "person", 1, 0),
        LineRow("door", "car", 0, 0),
    )
    assert final.zones[0] == ZoneRow("bottom right", "person", 1, 1, 1.0, 0, 0)


def test_facade_forgets_ended_tracks():
    analytics = facade()
    analytics.update(tracked(0, [person(2, 1920, 1200)]))
    analytics.update(tracked(1, [], ended=[2]))
    final = analytics.flush()
    assert final is not None
    assert final.zones[0].current == 0


def test_facade_emits_intervals_with_class_names():
    analytics = facade()
    closed: list[CountsInterval] = []
    for index, y in enumerate(
        [900, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100]
    ):
        closed += analytics.update(tracked(index, [person(1, 400, y, class_id=2)]))
    assert len(closed) == 1
    assert closed[0].lines == (
        LineRow("door", "person", 0, 0),
        LineRow("door", "car", 1, 0),
    )


def test_replace_geometry_keeps_counts_and_unchanged_state():
    analytics = facade()
    analytics.update(tracked(0, [person(1, 400, 900), person(2, 400, 900)]))
    analytics.update(tracked(1, [person(1, 400, 1100)]))
    lines = [
        LineSpec("door", Point(0, 500), Point(1280, 500), hysteresis_px=10),
        LineSpec("new", Point(0, 400), Point(1280, 400)),
    ]
    analytics.replace_geometry(lines, [])
    analytics.update(tracked(2, [person(2, 400, 1100)]))
    final = analytics.flush()
    assert final is not None
    assert [(row.line, row.class_name, row.in_count) for row in final.lines] == [
        ("door", "person", 2),
        ("door", "car", 0),
        ("new", "person", 0),
        ("new", "car", 0),
    ]
    assert [row.zone for row in final.zones] == ["bottom right", "bottom right"]


def test_replace_geometry_resets_changed_line():
    analytics = facade()
    analytics.update(tracked(0, [person(1, 400, 900)]))
    moved = [LineSpec("door", Point(0, 501), Point(1280, 501), hysteresis_px=10)]
    analytics.replace_geometry(moved, [])
    analytics.update(tracked(1, [person(1, 400, 1100)]))
    final = analytics.flush()
    assert final is not None
    assert final.lines[0].in_count == 0


def test_invalid_replacement_changes_nothing():
    analytics = facade()
    bad = [LineSpec("door", Point(0, 0), Point(0, 0))]
    with pytest.raises(GeometryError, match="line 'door' has zero length"):
        analytics.replace_geometry(bad, [])
    analytics.update(tracked(0, [person(1, 400, 900)]))
    analytics.update(tracked(1, [person(1, 400, 1100)]))
    final = analytics.flush()
    assert final is not None
    assert final.lines[0].in_count == 1


def test_resolution_change_rescales(caplog):
    analytics = facade()
    analytics.update(tracked(0, [person(1, 400, 900)]))
    with caplog.at_level(logging.WARNING):
        analytics.update(tracked(1, [person(1, 200, 550)], wh=(1280, 720)))
    analytics.update(tracked(2, [person(1, 200, 600)], wh=(1280, 720)))
    assert analytics.resolution_wh == (1280, 720)
    assert "stream resolution changed from 2560x1440 to 1280x720" in caplog.text
    final = analytics.flush()
    assert final is not None
    assert final.lines[0].in_count == 0


@pytest.mark.parametrize(
    ("lines", "zones", "match"),
    [
        (
            [LineSpec("door", Point(0, 1), Point(9, 1), classes=("bus",))],
            [],
            r"line 'door' classes names unknown classes \['bus'\]; expected names "
            r"from: person, car",
        ),
        (
            [LineSpec("door", Point(0, 1), Point(9, 1), classes=())],
            [],
            r"line 'door' classes is an empty list",
        ),
        (
            [
                LineSpec("door", Point(0, 1), Point(9, 1)),
                LineSpec("door", Point(0, 2), Point(9, 2)),
            ],
            [],
            r"line names must be unique; 'door' appear more than once",
        ),
    ],
    ids=["unknown class", "empty class list", "duplicate line name"],
)
def test_facade_rejects_config(lines, zones, match):
    with pytest.raises(GeometryError, match=match):
        Analytics(
            lines,
            zones,
            reference=REFERENCE,
            class_names=CLASSES,
            detector_classes=["person", "car"],
        )


def test_unknown_detector_class():
    with pytest.raises(
        GeometryError, match=r"detector classes names unknown classes \['cat'\]"
    ):
        Analytics(
            [], [], reference=REFERENCE, class_names=CLASSES, detector_classes=["cat"]
        )


def read_gt(path: Path) -> dict[int, list[tuple[int, float, float, float, float]]]:
    """Return MOTChallenge boxes per 1-based frame: (id, left, top, right, bottom)."""
    boxes: dict[int, list[tuple[int, float, float, float, float]]] = {}
    for line in path.read_text().splitlines():
        frame, track_id, left, top, width, height = (
            float(v) for v in line.split(",")[:6]
        )
        boxes.setdefault(int(frame), []).append(
            (int(track_id), left, top, left + width, top + height)
        )
    return boxes


@pytest.mark.media
@pytest.mark.parametrize(
    ("hysteresis_px", "expected"),
    [(5.0, (1, 4)), (10.0, (1, 4)), (20.0, (1, 4))],
    ids=[
        "band of 5 px counts all five",
        "band of 10 px counts track born in band",
        "band of 20 px counts track born in band",
    ],
)
def test_tud_campus_ground_truth_crossings(tud_campus: Path, hysteresis_px, expected):
    """Ground-truth tracks of TUD-Campus cross x = 320: 4 left to right, 1 back.

    The one walking right to left is first seen 8 px right of the line, so a
    10 px band gives it no origin side, the price of not counting id switches.
    """
    gt = read_gt(tud_campus.parent / "gt" / "gt.txt")
    images = sorted(tud_campus.glob("*.jpg"))
    # Drawn pointing down the screen, so left to right is `out`.
    line = LineSpec(
        "x320",
        Point(320, 0),
        Point(320, 480),
        classes=("person",),
        anchor="center",
        hysteresis_px=hysteresis_px,
    )
    analytics = Analytics(
        [line],
        [],
        reference=ReferenceFrame.pixels([640, 480]),
        class_names=CLASSES,
        detector_classes=["person"],
        interval_s=60,
    )
    seen: set[int] = set()
    for index, path in enumerate(images):
        image = cv2.imread(str(path))
        assert image is not None
        frame = Frame(image, index, index / 25, T0 + timedelta(seconds=index / 25))
        rows = gt.get(index + 1, [])
        tracks = [
            Track(tid, (left, top, right, bottom), 0, 1.0, True, True)
            for tid, left, top, right, bottom in rows
        ]
        current = {tid for tid, *_ in rows}
        analytics.update(TrackedFrame(frame, tracks, sorted(seen - current)))
        seen = current
    final = analytics.flush()
    assert final is not None
    assert final.frames == 71
    assert final.lines == (LineRow("x320", "person", *expected),)
