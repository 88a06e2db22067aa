"""Zone and line rules on synthetic tracks, through the incident engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from edge.detector.classes import COCO80_NAMES
from edge.incidents import (
    AbandonedObjectRule,
    CrowdingRule,
    IncidentEngine,
    IntrusionRule,
    Line,
    LoiteringRule,
    Rule,
    RuleError,
    StoppedVehicleRule,
    WrongWayRule,
    Zone,
)
from edge.types import Frame, Track, TrackedFrame

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FPS = 10.0
IMAGE = np.zeros((600, 640, 3), np.uint8)
PERSON, CAR, BACKPACK = 0, 2, 24
BOX_ZONE = Zone.from_points("square", [(100, 100), (500, 100), (500, 500), (100, 500)])

# Position of the object's anchor (bottom centre) at stream time t, or None
# when the object is not on the frame.
Path = Callable[[float], tuple[float, float] | None]


def box_at(
    point: tuple[float, float], size: float = 40.0
) -> tuple[float, float, float, float]:
    x, y = point
    return (x - size / 4, y - size, x + size / 4, y)


def tracked(
    index: int,
    tracks: Sequence[Track] = (),
    *,
    detection_ran: bool = True,
    ended: Iterable[int] = (),
) -> TrackedFrame:
    t = index / FPS
    frame = Frame(IMAGE, index, t, T0 + timedelta(seconds=t), detection_ran)
    return TrackedFrame(frame, list(tracks), list(ended))


def track(
    track_id: int,
    point: tuple[float, float],
    class_id: int = PERSON,
    *,
    detected: bool = True,
) -> Track:
    return Track(track_id, box_at(point), class_id, 0.9, True, detected)


def run(
    rules: Sequence[Rule],
    paths: dict[int, tuple[int, Path]],
    seconds: float,
    *,
    detection_every: int = 1,
) -> list[dict[str, Any]]:
    """Feed frames at FPS; a track ends on the frame its path turns None."""
    engine = IncidentEngine(rules, COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    present: set[int] = set()
    for index in range(round(seconds * FPS) + 1):
        t = index / FPS
        tracks, ended = [], []
        for track_id, (class_id, path) in paths.items():
            point = path(t)
            if point is None:
                if track_id in present:
                    present.discard(track_id)
                    ended.append(track_id)
                continue
            present.add(track_id)
            tracks.append(track(track_id, point, class_id))
        ran = index % detection_every == 0
        if not ran:
            tracks = [
                Track(tr.track_id, tr.xyxy, tr.class_id, tr.confidence, True, False)
                for tr in tracks
            ]
        bodies.extend(
            engine.process(tracked(index, tracks, detection_ran=ran, ended=ended))
        )
    return bodies


def seconds_of(body: dict[str, Any], field: str) -> float:
    moment = datetime.fromisoformat(body[field].replace("Z", "+00:00"))
    return (moment - T0).total_seconds()


def phases(bodies: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    return [body for body in bodies if body["phase"] == phase]


# --- loitering --------------------------------------------------------------


def loiterer(t: float) -> tuple[float, float] | None:
    """Enters at t=0, walks to the middle by t=2, stands until 40, leaves at 41."""
    if t < 2:
        return (100 + 100 * t, 300)
    if t < 40:
        return (300, 300)
    if t < 41:
        return (300 + 200 * (t - 40) + 1, 300)
    if t < 45:
        return (520 + 10 * (t - 41), 300)
    return None


def crosser(t: float) -> tuple[float, float] | None:
    """Walks across the zone in 6 s."""
    if t > 8:
        return None
    return (100 + 400 * t / 6, 300)


LOITERING = LoiteringRule(
    name="loiter", classes=frozenset({"person"}), zones=(BOX_ZONE,), limit_s=10
)


def test_loitering_standing_person_starts_at_limit() -> None:
    bodies = run([LOITERING], {1: (PERSON, loiterer)}, 50)
    starts, ends = phases(bodies, "start"), phases(bodies, "end")
    assert len(starts) == 1
    assert len(ends) == 1
    assert starts[0]["type"] == "loitering"
    assert seconds_of(starts[0], "started_at") == pytest.approx(10.0, abs=0.11)
    assert seconds_of(ends[0], "ended_at") == pytest.approx(41.0, abs=0.5)
    assert ends[0]["incident_id"] == starts[0]["incident_id"]


def test_loitering_crossing_in_six_seconds_is_quiet() -> None:
    assert run([LOITERING], {1: (PERSON, crosser)}, 12) == []


def test_loitering_coasting_frames_keep_dwell() -> None:
    # The detector runs on every 5th frame only; skipped frames carry
    # predictions, which must neither end nor restart the visit.
    bodies = run([LOITERING], {1: (PERSON, loiterer)}, 50, detection_every=5)
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert seconds_of(starts[0], "started_at") == pytest.approx(10.0, abs=0.11)
    assert len(phases(bodies, "end")) == 1


def test_loitering_short_exit_within_grace_keeps_one_visit() -> None:
    def stepping_out(t: float) -> tuple[float, float] | None:
        if 5 <= t < 6:
            return (550, 300)
        return (300, 300) if t < 20 else None

    bodies = run([LOITERING], {1: (PERSON, stepping_out)}, 22)
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert seconds_of(starts[0], "started_at") == pytest.approx(10.0, abs=0.11)


def test_loitering_long_exit_restarts_dwell() -> None:
    def two_visits(t: float) -> tuple[float, float] | None:
        if t < 8:
            return (300, 300)
        if t < 14:
            return (600, 300)
        return (300, 300) if t < 30 else None

    bodies = run([LOITERING], {1: (PERSON, two_visits)}, 32)
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert seconds_of(starts[0], "started_at") == pytest.approx(24.0, abs=0.11)


def test_loitering_updates_carry_growing_dwell() -> None:
    rule = LoiteringRule(
        name="loiter",
        classes=frozenset({"person"}),
        zones=(BOX_ZONE,),
        limit_s=10,
        update_every_s=10,
    )
    bodies = run([rule], {1: (PERSON, loiterer)}, 50)
    dwell = [body["detail"]["dwell_s"] for body in phases(bodies, "update")]
    assert dwell == sorted(dwell)
    assert len(dwell) == 3


# --- intrusion --------------------------------------------------------------


def test_intrusion_waits_for_trigger_delay() -> None:
    rule = IntrusionRule(
        name="fence",
        classes=frozenset({"person"}),
        zones=(BOX_ZONE,),
        trigger_delay_s=2,
    )
    bodies = run([rule], {1: (PERSON, crosser)}, 12)
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert seconds_of(starts[0], "started_at") == pytest.approx(2.0, abs=0.11)
    assert starts[0]["zone"] == "square"
    assert starts[0]["class"] == "person"
    assert len(phases(bodies, "end")) == 1


@pytest.mark.parametrize(
    ("class_id", "min_size_px", "expected"),
    [(PERSON, 0, 1), (CAR, 0, 0), (PERSON, 60, 0)],
    ids=["person", "other-class", "too-small"],
)
def test_intrusion_filters_class_and_size(
    class_id: int, min_size_px: float, expected: int
) -> None:
    rule = IntrusionRule(
        name="fence",
        classes=frozenset({"person"}),
        zones=(BOX_ZONE,),
        min_size_px=min_size_px,
    )
    bodies = run([rule], {1: (class_id, crosser)}, 12)
    assert len(phases(bodies, "start")) == expected


def test_intrusion_survives_track_id_switch() -> None:
    rule = IntrusionRule(
        name="fence",
        classes=frozenset({"person"}),
        zones=(BOX_ZONE,),
        trigger_delay_s=1,
        exit_grace_s=2,
    )
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    for index in range(150):
        t = index / FPS
        # Track 1 is lost at 5 s; the same person is track 2 from 6 s to 10 s.
        if t < 5:
            tracks = [track(1, (300, 300))]
        elif 6 <= t < 10:
            tracks = [track(2, (310, 300))]
        else:
            tracks = []
        ended = {50: [1], 100: [2]}.get(index, [])
        bodies.extend(engine.process(tracked(index, tracks, ended=ended)))
    starts, ends = phases(bodies, "start"), phases(bodies, "end")
    assert len(starts) == 1
    assert len(ends) == 1
    assert seconds_of(ends[0], "ended_at") == pytest.approx(9.9, abs=0.11)


def test_loitering_newcomer_far_away_starts_own_visit() -> None:
    # Track 1 dwells 8 s and is lost; 1 s later a different person appears
    # on the far side of the zone. Their dwell must not add up to 10 s.
    def first(t: float) -> tuple[float, float] | None:
        return (150, 300) if t < 8 else None

    def second(t: float) -> tuple[float, float] | None:
        return (450, 450) if 9 <= t < 16 else None

    bodies = run([LOITERING], {1: (PERSON, first), 2: (PERSON, second)}, 20)
    assert phases(bodies, "start") == []


def test_intrusion_cooldown_blocks_restart() -> None:
    def in_out_in(t: float) -> tuple[float, float] | None:
        if t < 3 or 6 <= t < 9:
            return (300, 300)
        return (600, 300) if t < 12 else None

    rule = IntrusionRule(
        name="fence",
        classes=frozenset({"person"}),
        zones=(BOX_ZONE,),
        exit_grace_s=0.5,
        cooldown_s=60,
    )
    bodies = run([rule], {1: (PERSON, in_out_in)}, 12)
    assert len(phases(bodies, "start")) == 1


# --- crowding ---------------------------------------------------------------


def crowd_run(
    rule: CrowdingRule, count_at: Callable[[float], int], seconds: float
) -> list[dict[str, Any]]:
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    for index in range(round(seconds * FPS) + 1):
        count = count_at(index / FPS)
        tracks = [track(n, (120 + 30 * n, 300)) for n in range(count)]
        bodies.extend(engine.process(tracked(index, tracks)))
    return bodies


def test_crowding_hysteresis_keeps_one_incident() -> None:
    rule = CrowdingRule(
        name="crowd",
        zones=(BOX_ZONE,),
        min_count=10,
        release_margin=2,
        trigger_delay_s=2,
        release_delay_s=3,
    )

    def counts(t: float) -> int:
        if t < 5:
            return 4
        if t < 10:
            return 11
        if t < 20:
            return 11 if int(t) % 2 else 9  # hovers around the threshold
        return 3

    bodies = crowd_run(rule, counts, 30)
    starts, ends = phases(bodies, "start"), phases(bodies, "end")
    assert len(starts) == 1
    assert len(ends) == 1
    assert seconds_of(ends[0], "ended_at") == pytest.approx(20.0, abs=0.11)
    assert ends[0]["detail"]["peak_count"] == 11


def test_crowding_brief_peak_below_trigger_delay_is_quiet() -> None:
    rule = CrowdingRule(
        name="crowd", zones=(BOX_ZONE,), min_count=10, trigger_delay_s=3
    )
    bodies = crowd_run(rule, lambda t: 12 if 5 <= t < 7 else 2, 12)
    assert bodies == []


# --- stationary objects -----------------------------------------------------


def bag(t: float) -> tuple[float, float] | None:
    return (300, 300) if t < 80 else None


def test_abandoned_bag_survives_occlusion() -> None:
    rule = AbandonedObjectRule(
        name="bags", zones=(BOX_ZONE,), limit_s=30, missing_grace_s=5
    )
    engine = IncidentEngine([rule], COCO80_NAMES)
    bodies: list[dict[str, Any]] = []
    for index in range(0, 700):
        t = index / FPS
        hidden = 20 <= t < 24  # someone stands in front of it for 4 s
        # The tracker drops track 7 when the bag is hidden and starts track 8
        # when it shows again; the new track takes over the timer.
        track_id = 7 if t < 20 else 8
        tracks = [] if hidden else [track(track_id, (300 + (index % 3), 300), BACKPACK)]
        ended = [7] if index == 200 else []
        bodies.extend(engine.process(tracked(index, tracks, ended=ended)))
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert seconds_of(starts[0], "started_at") == pytest.approx(30.0, abs=0.11)
    assert starts[0]["type"] == "abandoned_object"


def test_abandoned_bag_picked_up_ends() -> None:
    def carried(t: float) -> tuple[float, float] | None:
        return (300, 300) if t < 40 else (300 + 50 * (t - 40), 300)

    rule = AbandonedObjectRule(name="bags", zones=(BOX_ZONE,), limit_s=30)
    bodies = run([rule], {7: (BACKPACK, carried)}, 45)
    assert len(phases(bodies, "start")) == 1
    ends = phases(bodies, "end")
    assert len(ends) == 1
    # Moving at 50 px/s, it leaves the 15 px still radius after 0.4 s.
    assert seconds_of(ends[0], "ended_at") == pytest.approx(40.4, abs=0.11)


@pytest.mark.parametrize(
    ("cooldown_s", "expected"),
    [(120.0, 1), (0.0, 2)],
    ids=["within-cooldown", "no-cooldown"],
)
def test_abandoned_bag_put_down_again(cooldown_s: float, expected: int) -> None:
    def moved_once(t: float) -> tuple[float, float] | None:
        if t < 40:
            return (300, 300)
        if t < 41:
            return (300 + 100 * (t - 40), 300)
        return (400, 300)

    rule = AbandonedObjectRule(
        name="bags", zones=(BOX_ZONE,), limit_s=30, cooldown_s=cooldown_s
    )
    bodies = run([rule], {7: (BACKPACK, moved_once)}, 90)
    assert len(phases(bodies, "start")) == expected


def test_abandoned_skipped_detection_never_means_gone() -> None:
    # Detection runs once every 2 s only; 1.9 s of skipped frames exceed a
    # 1 s grace but must not count as missing.
    rule = AbandonedObjectRule(
        name="bags", zones=(BOX_ZONE,), limit_s=30, missing_grace_s=1
    )
    bodies = run([rule], {7: (BACKPACK, bag)}, 60, detection_every=20)
    assert len(phases(bodies, "start")) == 1
    assert phases(bodies, "end") == []


def test_stopped_vehicle_in_no_stopping_zone() -> None:
    def car(t: float) -> tuple[float, float] | None:
        if t < 5:
            return (100 + 40 * t, 300)
        return (300, 300)

    rule = StoppedVehicleRule(name="shoulder", zones=(BOX_ZONE,), limit_s=20)
    bodies = run([rule], {3: (CAR, car), 4: (PERSON, car)}, 40)
    starts = phases(bodies, "start")
    assert len(starts) == 1
    assert starts[0]["class"] == "car"
    # It is within the 20 px still radius of its final spot from t=4.8 s.
    assert seconds_of(starts[0], "started_at") == pytest.approx(24.8, abs=0.11)


# --- wrong way --------------------------------------------------------------

CROSSING = Line.from_points("gate", (0, 300), (640, 300))


def wrong_way_rule() -> WrongWayRule:
    return WrongWayRule(
        name="one-way",
        classes=frozenset({"person"}),
        lines=(CROSSING,),
        allowed_direction_xy=(0, 1),
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (lambda t: (320, 100 + 40 * t), 0),
        (lambda t: (320, 500 - 40 * t), 1),
        (lambda t: (320, 300 + (3 if int(t * FPS) % 2 else -3)), 0),
    ],
    ids=["allowed-direction", "against-direction", "jitter-on-line"],
)
def test_wrong_way_uses_net_displacement(path: Path, expected: int) -> None:
    bodies = run([wrong_way_rule()], {1: (PERSON, path)}, 10)
    assert len(phases(bodies, "start")) == expected
    assert len(phases(bodies, "end")) == expected


# --- settings errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: LoiteringRule(
                name="x", classes=frozenset({"person"}), zones=(BOX_ZONE,), limit_s=0
            ),
            "limit_s=0",
        ),
        (
            lambda: IntrusionRule(name="x", classes=frozenset(), zones=(BOX_ZONE,)),
            "classes is empty",
        ),
        (
            lambda: IntrusionRule(
                name="crowd/10", classes=frozenset({"person"}), zones=(BOX_ZONE,)
            ),
            "rule name 'crowd/10' is invalid",
        ),
        (
            lambda: IntrusionRule(name="x", classes=frozenset({"person"}), zones=()),
            "zones is empty",
        ),
        (
            lambda: CrowdingRule(
                name="x", zones=(BOX_ZONE,), min_count=3, release_margin=3
            ),
            "release_margin=3",
        ),
        (
            lambda: IntrusionRule(
                name="x",
                classes=frozenset({"person"}),
                zones=(BOX_ZONE,),
                min_size_m=1.5,
            ),
            "needs a ground plane",
        ),
        (
            lambda: IntrusionRule(
                name="x",
                classes=frozenset({"person"}),
                zones=(BOX_ZONE,),
                cooldown_s=-1,
            ),
            "cooldown_s=-1",
        ),
        (
            lambda: WrongWayRule(
                name="x",
                classes=frozenset({"car"}),
                lines=(CROSSING,),
                allowed_direction_xy=(1, 0),
            ),
            "runs along line 'gate'",
        ),
    ],
    ids=[
        "zero-limit",
        "no-classes",
        "slash-in-name",
        "no-zones",
        "margin-too-big",
        "metres-without-plane",
        "negative-cooldown",
        "direction-along-line",
    ],
)
def test_rule_settings_errors(build: Callable[[], object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        build()


def test_engine_rejects_duplicate_rule_names() -> None:
    with pytest.raises(RuleError, match=r"\['loiter'\] are used more than once"):
        IncidentEngine([LOITERING, LOITERING], COCO80_NAMES)
