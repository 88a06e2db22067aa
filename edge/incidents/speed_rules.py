"""Speed rules: objects faster than a limit on the calibrated ground plane.

Speeds come with the frame (`ObjectView.speed_kmh`), measured by
`edge.ground.TrackSpeeds` from the ground plane. A frame without a known
speed, such as one of a track too new for a speed, neither starts nor ends
anything. Zone membership changes only on frames where the object is
observed.

An incident starts once the speed has stayed above `limit_kmh` for
`trigger_delay_s`, and ends when the speed falls below `limit_kmh -
release_margin_kmh`, the object leaves the zone, or the track ends. A speed
between the two levels keeps an open incident open. Before an incident
starts, such a speed restarts the trigger delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import (
    FrameView,
    ObjectView,
    RuleError,
    RuleSettings,
    Zone,
    require_non_negative,
    require_positive,
)

SPEEDING_CLASSES = frozenset({"car", "motorcycle", "bus", "truck", "bicycle"})
# An incident's key is the track and the zone. The zone is None when the
# rule watches the whole frame.
SpeedKey = tuple[int, str | None]
# A track not seen for this long loses its state, for trackers that do not
# report every ended track.
_STALE_TRACK_S = 30.0
# Incident details carry speeds to 0.1 km/h.
_DECIMALS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeedingRule(RuleSettings):
    """An object faster than `limit_kmh` for `trigger_delay_s`.

    Attributes:
        limit_kmh: speed limit in km/h.
        zones: where the limit applies. Empty applies it on the whole frame.
        release_margin_kmh: the incident ends only once the speed falls below
            `limit_kmh - release_margin_kmh`. Raise it so that a speed
            hovering around the limit stays one incident; 0 ends it as soon
            as the speed is back under the limit.
        trigger_delay_s: the speed must stay above the limit this long.
            Raise it to ignore speed spikes from a jumping box; lower it for
            short views of the road.
    """

    limit_kmh: float
    zones: tuple[Zone, ...] = ()
    release_margin_kmh: float = 5.0
    trigger_delay_s: float = 0.5
    classes: frozenset[str] = SPEEDING_CLASSES

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        require_positive(self.name, "limit_kmh", self.limit_kmh)
        require_non_negative(self.name, "release_margin_kmh", self.release_margin_kmh)
        if self.release_margin_kmh >= self.limit_kmh:
            raise RuleError(
                f"rule {self.name!r}: release_margin_kmh={self.release_margin_kmh} is "
                f"invalid; use 0 or more and below limit_kmh={self.limit_kmh}"
            )
        names = [zone.name for zone in self.zones]
        if len(set(names)) != len(names):
            raise RuleError(
                f"rule {self.name!r}: zone names {names} repeat; name each zone once"
            )

    def build(self) -> SpeedingEvaluator:
        """Return the rule's runtime state."""
        return SpeedingEvaluator(self)


@dataclass(slots=True)
class _Run:
    """Speed history of one track in one zone (or the frame)."""

    last_seen: Moment
    above_since: Moment | None = None
    max_kmh: float = 0.0
    start_kmh: float = 0.0


class SpeedingEvaluator:
    """Runtime state: each watched object's speed compared with the limit."""

    def __init__(self, settings: SpeedingRule) -> None:
        self.settings = settings
        self._book = IncidentBook(
            settings.name,
            IncidentType.SPEEDING,
            settings.severity,
            settings.cooldown_s,
        )
        self._runs: dict[SpeedKey, _Run] = {}

    def open_keys(self) -> list[SpeedKey]:
        """Return the (track id, zone name or None) keys of open incidents."""
        return [key for key in self._runs if self._book.is_open(key)]

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Compare each watched object's speed with the limit, return events."""
        now = frame.now
        events: list[IncidentEvent] = []
        for view in frame.objects:
            if not self.settings.watches(view):
                continue
            if frame.observed(view):
                events.extend(self._move(view, now))
            for key in self._keys_of(view.track_id):
                events.extend(self._step(key, view, now))
        events.extend(self._expire(frame.ended_track_ids, now))
        self._book.forget_cooldowns(now.pts_s)
        return events

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and forget every track."""
        self._runs.clear()
        return self._book.end_all(now)

    def _keys_of(self, track_id: int) -> list[SpeedKey]:
        return [key for key in self._runs if key[0] == track_id]

    def _move(self, view: ObjectView, now: Moment) -> list[IncidentEvent]:
        """Update the zones the object is in and end incidents of zones it left."""
        if not self.settings.zones:
            self._runs.setdefault((view.track_id, None), _Run(now))
            return []
        point = self.settings.anchor.point(view.xyxy)
        inside = {zone.name for zone in self.settings.zones if zone.contains(point)}
        events: list[IncidentEvent] = []
        for key in self._keys_of(view.track_id):
            if key[1] not in inside:
                events.extend(self._drop(key, now))
        for name in inside:
            self._runs.setdefault((view.track_id, name), _Run(now))
        return events

    def _step(
        self, key: SpeedKey, view: ObjectView, now: Moment
    ) -> list[IncidentEvent]:
        run = self._runs[key]
        run.last_seen = now
        speed = view.speed_kmh
        if speed is None:
            return []
        rule = self.settings
        is_open = self._book.is_open(key)
        if speed > rule.limit_kmh:
            run.above_since = run.above_since or now
            run.max_kmh = max(run.max_kmh, speed)
            if is_open or now.pts_s - run.above_since.pts_s < rule.trigger_delay_s:
                return []
            return self._start(key, view, speed, now)
        if is_open and speed < rule.limit_kmh - rule.release_margin_kmh:
            return self._end(key, run, now)
        if not is_open:
            run.above_since = None
            run.max_kmh = 0.0
        return []

    def _start(
        self, key: SpeedKey, view: ObjectView, speed: float, now: Moment
    ) -> list[IncidentEvent]:
        run = self._runs[key]
        event = self._book.start(
            key,
            now,
            zone=key[1],
            class_name=view.class_name,
            detail=self._detail(speed, run.max_kmh),
        )
        if event is None:
            return []
        run.start_kmh = speed
        return [event]

    def _end(self, key: SpeedKey, run: _Run, now: Moment) -> list[IncidentEvent]:
        event = self._book.end(
            key,
            now,
            ended_at=run.last_seen.at,
            detail=self._detail(run.start_kmh, run.max_kmh),
        )
        run.above_since = None
        run.max_kmh = 0.0
        return [event] if event is not None else []

    def _drop(self, key: SpeedKey, now: Moment) -> list[IncidentEvent]:
        run = self._runs.pop(key)
        if not self._book.is_open(key):
            return []
        event = self._book.end(
            key,
            now,
            ended_at=run.last_seen.at,
            detail=self._detail(run.start_kmh, run.max_kmh),
        )
        return [event] if event is not None else []

    def _expire(self, ended: frozenset[int], now: Moment) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        for key, run in list(self._runs.items()):
            stale = now.pts_s - run.last_seen.pts_s >= _STALE_TRACK_S
            if key[0] in ended or stale:
                events.extend(self._drop(key, now))
        return events

    def _detail(self, speed_kmh: float, max_kmh: float) -> dict[str, float]:
        """Return the speed at the start, the highest so far and the limit."""
        return {
            "speed_kmh": round(speed_kmh, _DECIMALS),
            "max_speed_kmh": round(max_kmh, _DECIMALS),
            "limit_kmh": self.settings.limit_kmh,
        }
