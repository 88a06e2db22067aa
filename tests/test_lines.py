"""Line crossing rules: sides, hysteresis, segment extent, confirmation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.analytics.geometry import GeometryError, Point, Segment
from edge.analytics.lines import Crossing, Direction, LineCounter
from edge.types import Track

IN, OUT = Direction.IN, Direction.OUT


def box_at(x: float, y: float) -> tuple[float, float, float, float]:
    """Return a 20x50 box whose bottom centre is (x, y)."""
    return (x - 10.0, y - 50.0, x + 10.0, y)


def track(
    x: float,
    y: float,
    *,
    track_id: int = 1,
    class_id: int = 0,
    confirmed: bool = True,
    detected: bool = True,
) -> Track:
    return Track(track_id, box_at(x, y), class_id, 0.9, confirmed, detected)


def run(
    counter: LineCounter, path: list[tuple[float, float]], **kwargs
) -> list[Crossing]:
    """Feed one track along `path`, one position per frame at 10 fps."""
    crossings: list[Crossing] = []
    for index, (x, y) in enumerate(path):
        crossings += counter.update([track(x, y, **kwargs)], index / 10.0)
    return crossings


def directions(crossings: list[Crossing]) -> list[Direction]:
    return [crossing.direction for crossing in crossings]


def horizontal(y: float, **kwargs) -> LineCounter:
    return LineCounter("door", Point(0, y), Point(1000, y), **kwargs)


@pytest.mark.parametrize(
    ("line_y", "ys", "expected"),
    [
        (500, [440, 470, 495, 505, 495, 505, 495, 505, 530, 560], [IN]),
        (500, [440, 470, 495, 505, 495, 505, 495, 470, 440], []),
        (390, [200, 260, 320, 370, 410, 470, 530], [IN]),
        (390, list(range(200, 541, 20)), [IN]),
        (500, [560, 530, 505, 495, 470, 440], [OUT]),
        (500, [440, 470, 530, 560, 530, 470, 440], [IN, OUT]),
        (500, [440, 530, 470, 530, 470, 530], [IN, OUT]),
        (500, [440, 470, 495, 505, 505, 505], []),
        (500, [480, 500, 520], [IN]),
        (500, [480, 500, 500, 480], []),
        (500, [530, 560, 600], []),
        (500, [495, 480, 460, 440], []),
        (500, [496, 510, 540, 570], [IN]),
        (500, [504, 496, 504, 496, 504], []),
        (500, [504, 530, 560], []),
    ],
    ids=[
        "flicker then through counts once",
        "flicker then back counts nothing",
        "jump over line at 5 fps",
        "same motion at 15 fps",
        "upward is out",
        "down and back up",
        "once per direction",
        "stops inside band",
        "lands exactly on line",
        "touches line and turns back",
        "never on the other side",
        "born in band walks away",
        "born in band crosses",
        "born in band flickers",
        "born in band on far side",
    ],
)
def test_crossing_sequences(line_y: float, ys: list[float], expected: list[Direction]):
    counter = horizontal(line_y, hysteresis_px=10)
    crossings = run(counter, [(300.0, y) for y in ys])
    assert directions(crossings) == expected


def test_sub_threshold_flicker_never_counts_reverse():
    counter = horizontal(500, hysteresis_px=10)
    path = [(300.0, y) for y in (440, 470, 530, 560, 505, 495, 505, 495, 505, 530)]
    assert directions(run(counter, path)) == [IN]


@pytest.mark.parametrize(
    ("start", "end", "path", "expected"),
    [
        ((320, 0), (320, 480), [(400, 240), (360, 240), (280, 240), (240, 240)], [IN]),
        ((320, 0), (320, 480), [(240, 240), (280, 240), (360, 240), (400, 240)], [OUT]),
        ((320, 480), (320, 0), [(240, 240), (280, 240), (360, 240), (400, 240)], [IN]),
        ((320, 480), (320, 0), [(400, 240), (360, 240), (280, 240), (240, 240)], [OUT]),
        ((0, 500), (1000, 500), [(300, 440), (300, 560)], [IN]),
        ((1000, 500), (0, 500), [(300, 440), (300, 560)], [OUT]),
    ],
    ids=[
        "down arrow, right to left is in",
        "down arrow, left to right is out",
        "up arrow, left to right is in",
        "up arrow, right to left is out",
        "rightward arrow, downward is in",
        "leftward arrow, downward is out",
    ],
)
def test_side_rule(start, end, path, expected):
    counter = LineCounter("l", Point(*start), Point(*end), hysteresis_px=10)
    assert directions(run(counter, path)) == expected


@pytest.mark.parametrize(
    ("point", "sign"),
    [((240, 240), 1), ((400, 240), -1), ((320, 100), 0)],
    ids=["screen left is right-hand", "screen right is left-hand", "on the line"],
)
def test_cross_sign_for_downward_line(point, sign):
    segment = Segment(Point(320, 0), Point(320, 480))
    value = segment.cross(Point(*point))
    assert (value > 0) - (value < 0) == sign


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([(200, 440), (200, 560)], [IN]),
        ([(600, 440), (600, 560)], []),
        ([(380, 440), (420, 560)], [IN]),
        ([(390, 440), (450, 560)], []),
        ([(400, 440), (400, 500), (400, 560)], [IN]),
        ([(450, 440), (450, 500), (300, 500), (300, 560)], [IN]),
        ([(300, 440), (450, 470), (450, 560)], []),
    ],
    ids=[
        "through the middle",
        "beside the segment",
        "through the end point",
        "diagonal past the end",
        "stops on the end point",
        "slides along the line into extent",
        "leaves extent before crossing",
    ],
)
def test_segment_extent(path, expected):
    counter = LineCounter("short", Point(0, 500), Point(400, 500), hysteresis_px=10)
    assert directions(run(counter, path)) == expected


@pytest.mark.parametrize(
    ("frame_wh", "expected"),
    [((640, 480), [IN]), (None, [])],
    ids=["band fits the frame", "band wider than the frame"],
)
def test_line_near_frame_edge(frame_wh, expected):
    counter = LineCounter(
        "edge", Point(0, 470), Point(640, 470), hysteresis_px=20, frame_wh=frame_wh
    )
    path = [(320.0, y) for y in (430, 450, 465, 478, 480, 480)]
    assert directions(run(counter, path)) == expected


def test_band_narrowed_only_on_short_side():
    counter = LineCounter(
        "edge", Point(0, 470), Point(640, 470), hysteresis_px=20, frame_wh=(640, 480)
    )
    assert counter.band_px == {-1: 20.0, 1: 5.0}


def test_id_churn_does_not_count():
    counter = horizontal(500, hysteresis_px=10)
    first = run(counter, [(300, 440), (300, 470), (300, 495)], track_id=1)
    counter.forget([1])
    second = run(counter, [(300, 505), (300, 530), (300, 560)], track_id=2)
    assert first == []
    assert second == []
    assert counter.tracked_count == 1


def test_new_track_beyond_band_has_no_origin():
    counter = horizontal(500, hysteresis_px=10)
    assert run(counter, [(300, 560), (300, 600)], track_id=7) == []


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([(440, True), (470, True), (530, False), (470, True)], []),
        ([(440, True), (470, True), (480, False), (530, True)], [IN]),
        ([(440, True), (470, False), (530, False), (560, False)], []),
    ],
    ids=[
        "prediction across the line is ignored",
        "crossing while coasting counts on detection",
        "coasting never counts",
    ],
)
def test_coasting_positions(frames, expected):
    counter = horizontal(500, hysteresis_px=10)
    crossings: list[Crossing] = []
    for index, (y, detected) in enumerate(frames):
        moved = track(300, y, detected=detected)
        crossings += counter.update([moved], index / 10)
    assert directions(crossings) == expected


def test_frame_without_detection_is_ignored():
    counter = horizontal(500, hysteresis_px=10)
    counter.update([track(300, 440)], 0.0)
    crossings = counter.update([track(300, 560)], 0.1, detection_ran=False)
    assert crossings == []
    assert directions(counter.update([track(300, 470)], 0.2)) == []


@pytest.mark.parametrize(
    ("frames", "expected", "counted_at"),
    [
        ([(440, False), (560, False), (580, True)], [IN], 0.2),
        ([(440, False), (560, True)], [IN], 0.1),
        ([(440, False), (560, False), (440, False), (430, True)], [], None),
        ([(440, True), (560, False), (580, False)], [], None),
    ],
    ids=[
        "held until confirmed",
        "confirmed on crossing frame",
        "crossed back before confirmation",
        "confirmed track losing confirmation does not count",
    ],
)
def test_unconfirmed_tracks(frames, expected, counted_at):
    counter = horizontal(500, hysteresis_px=10)
    crossings: list[Crossing] = []
    for index, (y, confirmed) in enumerate(frames):
        crossings += counter.update([track(300, y, confirmed=confirmed)], index / 10)
    assert directions(crossings) == expected
    if counted_at is not None:
        assert crossings[0].pts_s == pytest.approx(counted_at)


def test_unconfirmed_track_that_ends_never_counts():
    counter = horizontal(500, hysteresis_px=10)
    run(counter, [(300, 440), (300, 560)], confirmed=False)
    counter.forget([1])
    assert run(counter, [(300, 580)], confirmed=True) == []


@pytest.mark.parametrize(
    ("classes", "class_id", "expected"),
    [(None, 2, [IN]), ({0, 2}, 2, [IN]), ({0}, 2, [])],
    ids=["all classes", "class in filter", "class filtered out"],
)
def test_class_filter(classes, class_id, expected):
    counter = horizontal(500, hysteresis_px=10, classes=classes)
    crossings = run(counter, [(300, 440), (300, 560)], class_id=class_id)
    assert directions(crossings) == expected
    assert all(crossing.class_id == class_id for crossing in crossings)


def test_class_at_crossing_is_reported():
    counter = horizontal(500, hysteresis_px=10)
    counter.update([track(300, 440, class_id=0)], 0.0)
    crossings = counter.update([track(300, 560, class_id=2)], 0.1)
    assert [crossing.class_id for crossing in crossings] == [2]


def test_state_is_bounded():
    counter = horizontal(500, hysteresis_px=10, max_tracks=3)
    for track_id in range(10):
        counter.update([track(300, 440, track_id=track_id)], track_id / 10)
    assert counter.tracked_count == 3
    counter.forget([7, 8, 9, 42])
    assert counter.tracked_count == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"start": Point(5, 5), "end": Point(5, 5)},
            GeometryError,
            r"line 'door' has zero length: start and end are both \(5, 5\)",
        ),
        (
            {"hysteresis_px": -1},
            ValueError,
            "hysteresis_px must be >= 0 pixels, got -1",
        ),
        ({"max_tracks": 0}, ValueError, "max_tracks must be >= 1, got 0"),
        ({"name": "bad/name"}, GeometryError, "line name 'bad/name' is invalid"),
    ],
    ids=["zero length", "negative hysteresis", "no track room", "invalid name"],
)
def test_invalid_line(kwargs, error, match):
    arguments = {"name": "door", "start": Point(0, 0), "end": Point(10, 0)} | kwargs
    name, start, end = (
        arguments.pop("name"),
        arguments.pop("start"),
        arguments.pop("end"),
    )
    with pytest.raises(error, match=match):
        LineCounter(name, start, end, **arguments)


@settings(max_examples=300, deadline=None)
@given(
    angle=st.floats(0, 2 * math.pi),
    where=st.floats(0.05, 0.95),
    tilt=st.floats(-1.2, 1.2),
    before=st.floats(11, 300),
    after=st.floats(11, 300),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=40),
)
def test_count_invariant_to_sampling(*, angle, where, tilt, before, after, fractions):
    """Monotonic motion through the segment counts once, at any sampling."""
    start = Point(500, 500)
    end = Point(500 + 400 * math.cos(angle), 500 + 400 * math.sin(angle))
    counter = LineCounter("l", start, end, hysteresis_px=10)
    crossing = Point(
        start.x + where * (end.x - start.x), start.y + where * (end.y - start.y)
    )

    # Unit normal towards the right-hand side, then the motion tilted from it.
    normal_x, normal_y = -math.sin(angle), math.cos(angle)
    move_x = normal_x * math.cos(tilt) - normal_y * math.sin(tilt)
    move_y = normal_x * math.sin(tilt) + normal_y * math.cos(tilt)
    reach = math.cos(tilt)
    first = Point(
        crossing.x - move_x * before / reach, crossing.y - move_y * before / reach
    )
    last = Point(
        crossing.x + move_x * after / reach, crossing.y + move_y * after / reach
    )

    samples = sorted({0.0, 1.0, *fractions})
    path = [
        (first.x + f * (last.x - first.x), first.y + f * (last.y - first.y))
        for f in samples
    ]
    assert directions(run(counter, path)) == [IN]
