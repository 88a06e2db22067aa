"""Speeding incidents and rule distances in metres, on a known ground plane."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from edge.detector.classes import COCO80_NAMES
from edge.incidents import (
    AbandonedObjectRule,
    IncidentEngine,
    IntrusionRule,
    Line,
    Rule,
    RuleError,
    SpeedingRule,
    WrongWayRule,
    Zone,
)
from edge.messages import envelope, validate
from edge.types import Frame, Track, TrackedFrame
from tests.support.ground_camera import RESOLUTION, ground_plane, pixel

T0 = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
FPS = 10.0
IMAGE = np.zeros((RESOLUTION[1], RESOLUTION[0], 3), np.uint8)
PERSON, CAR, BACKPACK = 0, 2, 24
LIMIT_KMH = 50.0

# One car's speed in km/h at stream time t (None: unknown), or the car is
# gone (the track ends) when the profile returns the string "gone".
Profile = Callable[[float], float | str | None]


def car_box(east: float = 0.0, north: float = 5.0) -> tuple[float, float, float, float]:
    x, y = pixel(east, north)
    return (x - 30, y - 40, x + 30, y)


def run_speeds(
    rule: SpeedingRule,
    profile: Profile,
    seconds: float,
    *,
    class_id: int = CAR,
    position: Callable[[float], tuple[float, float]] = lambda _t: (0.0, 5.0),
) -> list[dict[str, Any]]:
    """Feed one track whose speed follows `profile`; return incident bodies."""
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    alive = True
    for index in range(round(seconds * FPS) + 1):
        t = index / FPS
        frame = Frame(IMAGE, index, t, T0 + timedelta(seconds=t))
        speed = profile(t)
        if speed == "gone":
            ended = [1] if alive else []
            alive = False
            bodies.extend(engine.process(TrackedFrame(frame, [], ended)))
            continue
        track = Track(1, car_box(*position(t)), class_id, 0.9, True, True)
        tracked = TrackedFrame(frame, [track])
        if isinstance(speed, float):
            tracked.speeds_kmh = {1: speed}
        bodies.extend(engine.process(tracked))
    for body in bodies:
        validate({**envelope("incident", "lab", "cam-01", 1), **body})
    return bodies


def phases(bodies: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
    """Return (phase, seconds after T0 of started_at or ended_at) per body."""
    result = []
    for body in bodies:
        field = "ended_at" if body["phase"] == "end" else "started_at"
        moment = datetime.fromisoformat(body[field].replace("Z", "+00:00"))
        result.append((body["phase"], round((moment - T0).total_seconds(), 2)))
    return result


def speeding(**kwargs: Any) -> SpeedingRule:  # noqa: ANN401
    kwargs.setdefault("limit_kmh", LIMIT_KMH)
    return SpeedingRule(name="speed", **kwargs)


def steps(*pieces: tuple[float, float | str | None]) -> Profile:
    """Return a profile that is piece[i][1] from piece[i][0] seconds on."""

    def profile(t: float) -> float | str | None:
        value: float | str | None = None
        for start_s, speed in pieces:
            if t >= start_s - 1e-9:
                value = speed
        return value

    return profile


@pytest.mark.parametrize(
    ("rule", "profile", "seconds", "expected"),
    [
        (
            speeding(),
            steps((0, 40.0), (1, 60.0), (3, 30.0)),
            5,
            [("start", 1.5), ("end", 3.0)],
        ),
        (
            speeding(),
            steps((0, 40.0), (1, 60.0), (1.3, 40.0)),
            3,
            [],
        ),
        (
            speeding(),
            steps((0, 60.0), (1, 47.0), (2, 60.0), (3, 40.0)),
            4,
            [("start", 0.5), ("end", 3.0)],
        ),
        (
            speeding(release_margin_kmh=0.0),
            steps((0, 60.0), (1, 47.0), (2, 60.0)),
            3,
            [("start", 0.5), ("end", 1.0)],
        ),
        (
            speeding(),
            steps((0, 60.0), (1.0, 48.0), (1.2, 60.0)),
            3,
            [("start", 0.5)],
        ),
        (
            speeding(),
            steps((0, 60.0), (1, None), (2, 60.0), (3, 30.0)),
            4,
            [("start", 0.5), ("end", 3.0)],
        ),
        (
            speeding(),
            steps((0, 60.0), (2, "gone")),
            3,
            [("start", 0.5), ("end", 1.9)],
        ),
        (
            speeding(cooldown_s=5.0),
            steps((0, 60.0), (1, 30.0), (2, 60.0), (3, 30.0), (7, 60.0)),
            8,
            [("start", 0.5), ("end", 1.0), ("start", 7.5)],
        ),
        (
            speeding(cooldown_s=0.0),
            steps((0, 60.0), (1, 30.0), (2, 60.0)),
            3,
            [("start", 0.5), ("end", 1.0), ("start", 2.5)],
        ),
        (
            speeding(trigger_delay_s=0.0),
            steps((0, 51.0)),
            1,
            [("start", 0.0)],
        ),
    ],
    ids=[
        "start-after-delay-end-below-release",
        "spike-shorter-than-delay",
        "dip-inside-margin-keeps-one",
        "no-margin-ends-at-limit",
        "dip-before-start-restarts-delay",
        "unknown-speed-keeps-state",
        "track-end-ends",
        "cooldown-blocks-restart",
        "no-cooldown-restarts",
        "no-delay",
    ],
)
def test_speeding_lifecycle(
    rule: SpeedingRule,
    profile: Profile,
    seconds: float,
    expected: list[tuple[str, float]],
) -> None:
    bodies = run_speeds(rule, profile, seconds)

    assert phases(bodies) == expected


def test_speeding_detail_has_start_max_and_limit() -> None:
    bodies = run_speeds(
        speeding(), steps((0, 55.0), (0.5, 58.0), (1, 72.4), (2, 20.0)), 3
    )

    start, end = bodies
    assert start["type"] == "speeding"
    assert start["class"] == "car"
    assert "zone" not in start
    assert start["detail"] == {
        "speed_kmh": 58.0,
        "max_speed_kmh": 58.0,
        "limit_kmh": LIMIT_KMH,
    }
    assert end["detail"] == {
        "speed_kmh": 58.0,
        "max_speed_kmh": 72.4,
        "limit_kmh": LIMIT_KMH,
    }


def test_speeding_ignores_unwatched_class() -> None:
    bodies = run_speeds(speeding(), steps((0, 90.0)), 2, class_id=PERSON)

    assert bodies == []


ROAD = Zone.from_points("road", [pixel(-3, 2), pixel(3, 2), pixel(3, 8), pixel(-3, 8)])


def test_speeding_in_zone_ends_on_leaving() -> None:
    def east_of(t: float) -> tuple[float, float]:
        return (-5.0 + 16.0 / 3.6 * t, 5.0)  # 16 m/s along the lane

    bodies = run_speeds(
        speeding(zones=(ROAD,)), steps((0, 57.6)), 2.5, position=east_of
    )

    # Inside the zone from east = -3 m (t = 0.45 s) to 3 m (t = 1.8 s).
    assert phases(bodies) == [("start", 1.0), ("end", 1.8)]
    assert bodies[0]["zone"] == "road"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: speeding(limit_kmh=0.0), "limit_kmh=0.0 is invalid"),
        (
            lambda: speeding(release_margin_kmh=50.0),
            "release_margin_kmh=50.0 is invalid",
        ),
        (
            lambda: speeding(zones=(ROAD, ROAD)),
            "zone names .* repeat",
        ),
    ],
    ids=["zero-limit", "margin-at-limit", "zone-twice"],
)
def test_speeding_settings_errors(build: Callable[[], object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        build()


# --- distances in metres ------------------------------------------------------


def run_objects(
    rule: Rule,
    position: Callable[[float], tuple[float, float]],
    seconds: float,
    *,
    class_id: int,
    box_px: tuple[float, float] = (30.0, 40.0),
) -> list[dict[str, Any]]:
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    width, height = box_px
    for index in range(round(seconds * FPS) + 1):
        t = index / FPS
        x, y = pixel(*position(t))
        frame = Frame(IMAGE, index, t, T0 + timedelta(seconds=t))
        box = (x - width / 2, y - height, x + width / 2, y)
        bodies.extend(
            engine.process(
                TrackedFrame(frame, [Track(1, box, class_id, 0.9, True, True)])
            )
        )
    return bodies


YARD = Zone.from_points(
    "yard", [pixel(-5, 0.5), pixel(5, 0.5), pixel(5, 9.5), pixel(-5, 9.5)]
)


def wobble(amplitude_m: float, north: float) -> Callable[[float], tuple[float, float]]:
    """A bag whose ground point swings east and west by `amplitude_m`."""
    return lambda t: (amplitude_m * np.sin(t * 3.0), north)


@pytest.mark.parametrize(
    ("radius", "amplitude_m", "north", "expected"),
    [
        ({"still_radius_m": 0.5}, 0.3, 1.0, 1),
        ({"still_radius_m": 0.5}, 0.3, 9.0, 1),
        ({"still_radius_m": 0.5}, 1.0, 9.0, 0),
        ({"still_radius_px": 20.0}, 0.3, 1.0, 0),
        ({"still_radius_px": 20.0}, 0.3, 9.0, 1),
    ],
    ids=["m-near", "m-far", "m-far-moving", "px-near-too-tight", "px-far"],
)
def test_still_radius_in_metres_same_near_and_far(
    radius: dict[str, float], amplitude_m: float, north: float, expected: int
) -> None:
    # A swing of 0.3 m is about 27 px at north = 1 m and 17 px at north = 9 m.
    rule = AbandonedObjectRule(
        name="bag", zones=(YARD,), limit_s=5.0, ground_plane=ground_plane(), **radius
    )

    bodies = run_objects(rule, wobble(amplitude_m, north), 8, class_id=BACKPACK)

    starts = [body for body in bodies if body["phase"] == "start"]
    assert len(starts) == expected


GATE = Line.from_points("gate", pixel(0.0, 0.0), pixel(0.0, 10.0))
# Traffic is allowed westwards, so moving east is wrong way.
WEST = (pixel(-1.0, 5.0)[0] - pixel(0.0, 5.0)[0], 0.0)


@pytest.mark.parametrize(
    ("travel", "step_m", "expected"),
    [
        ({"min_travel_m": 1.0}, 0.6, 0),
        ({"min_travel_m": 1.0}, 1.5, 1),
        ({"min_travel_px": 10.0}, 0.6, 1),
    ],
    ids=["m-short", "m-long", "px-short-counts"],
)
def test_wrong_way_travel_in_metres(
    travel: dict[str, float], step_m: float, expected: int
) -> None:
    rule = WrongWayRule(
        name="wrong",
        classes=frozenset({"car"}),
        lines=(GATE,),
        allowed_direction_xy=WEST,
        ground_plane=ground_plane(),
        **travel,
    )

    # The car moves step_m east in 1 s and crosses the line at its end, so
    # the 1 s window contains the whole move when the crossing is judged.
    bodies = run_objects(
        rule, lambda t: (step_m * (min(t, 1.0) - 0.95), 5.0), 2, class_id=CAR
    )

    starts = [body for body in bodies if body["phase"] == "start"]
    assert len(starts) == expected
    if expected and "min_travel_m" in travel:
        assert starts[0]["detail"]["travel_m"] == pytest.approx(step_m, rel=0.1)


@pytest.mark.parametrize(
    ("north", "box_px", "expected"),
    [(9.0, (20.0, 40.0), 1), (1.0, (20.0, 40.0), 0), (1.0, (40.0, 90.0), 1)],
    ids=["far-small-box-is-big", "near-small-box-is-small", "near-big-box"],
)
def test_min_size_in_metres(
    north: float, box_px: tuple[float, float], expected: int
) -> None:
    rule = IntrusionRule(
        name="yard",
        classes=frozenset({"person"}),
        zones=(YARD,),
        min_size_m=0.5,
        ground_plane=ground_plane(),
    )

    bodies = run_objects(
        rule, lambda _t: (0.0, north), 1, class_id=PERSON, box_px=box_px
    )

    assert len([body for body in bodies if body["phase"] == "start"]) == expected


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: AbandonedObjectRule(name="bag", zones=(YARD,), still_radius_m=0.5),
            r"still_radius_m=0.5 needs a ground plane; run `sitlab-calibrate "
            r"ground` or use still_radius_px",
        ),
        (
            lambda: WrongWayRule(
                name="w",
                classes=frozenset({"car"}),
                lines=(GATE,),
                allowed_direction_xy=WEST,
                min_travel_m=1.0,
            ),
            "min_travel_m=1.0 needs a ground plane",
        ),
        (
            lambda: WrongWayRule(
                name="w",
                classes=frozenset({"car"}),
                lines=(Line.from_points("sky", (0.0, -600.0), (600.0, -600.0)),),
                allowed_direction_xy=(0.0, 1.0),
                min_travel_m=1.0,
                ground_plane=ground_plane(),
            ),
            r"line 'sky' point \(0, -600\) is beyond the horizon",
        ),
        (
            lambda: IntrusionRule(
                name="i",
                classes=frozenset({"person"}),
                zones=(YARD,),
                min_size_px=20.0,
                min_size_m=0.5,
                ground_plane=ground_plane(),
            ),
            "min_size_px=20.0 and min_size_m=0.5 are both set",
        ),
    ],
    ids=["radius-no-plane", "travel-no-plane", "line-in-sky", "size-both-forms"],
)
def test_metre_settings_errors(build: Callable[[], object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        build()
