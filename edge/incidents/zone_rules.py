"""Zone rules: intrusion, loitering, crowding, abandoned object, stopped vehicle.

Each rule is a frozen settings dataclass; `build()` returns its runtime
state, which the engine feeds one frame at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edge.incidents.dwell import DwellEvaluator
from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import (
    FrameView,
    RuleError,
    RuleSettings,
    Zone,
    require_non_negative,
    require_positive,
)
from edge.incidents.stationary import StationaryEvaluator

BAGGAGE_CLASSES = frozenset({"backpack", "handbag", "suitcase"})
VEHICLE_CLASSES = frozenset({"car", "bus", "truck", "motorcycle"})


def _require_zones(rule: str, zones: tuple[Zone, ...]) -> None:
    if not zones:
        raise RuleError(f"rule {rule!r}: zones is empty; give at least one zone")
    names = [zone.name for zone in zones]
    if len(set(names)) != len(names):
        raise RuleError(
            f"rule {rule!r}: zone names {names} repeat; name each zone once"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrusionRule(RuleSettings):
    """An object of the watched classes inside a zone for `trigger_delay_s`.

    Attributes:
        zones: forbidden zones.
        exit_grace_s: the object must be seen outside this long before the
            intrusion ends. Raise it so that a box flickering across the
            zone edge stays one incident; lower it to end incidents sooner.
    """

    zones: tuple[Zone, ...]
    exit_grace_s: float = 1.0

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        _require_zones(self.name, self.zones)
        require_non_negative(self.name, "exit_grace_s", self.exit_grace_s)

    def build(self) -> DwellEvaluator:
        """Return the rule's runtime state."""
        return DwellEvaluator(
            self,
            self.zones,
            IncidentType.INTRUSION,
            self.trigger_delay_s,
            self.exit_grace_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoiteringRule(RuleSettings):
    """An object that stays in a zone longer than `limit_s`.

    Dwell is measured in stream seconds per visit, not in frames, and it
    restarts when the object has been outside for more than `exit_grace_s`.
    An object that stops moving keeps dwelling.

    Attributes:
        zones: watched zones.
        limit_s: dwell after which the incident starts (added to
            `trigger_delay_s`, which is usually 0 here). Raise it to allow
            longer waits, such as at a bus stop.
        exit_grace_s: time outside the zone that ends a visit. Raise it
            when people step out briefly and come back; lower it to count
            separate visits separately.
        update_every_s: while the incident is open, an update with the
            current dwell is sent at most this often; 0 sends none.
    """

    zones: tuple[Zone, ...]
    limit_s: float
    exit_grace_s: float = 3.0
    update_every_s: float = 30.0

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        _require_zones(self.name, self.zones)
        require_positive(self.name, "limit_s", self.limit_s)
        require_non_negative(self.name, "exit_grace_s", self.exit_grace_s)
        require_non_negative(self.name, "update_every_s", self.update_every_s)

    def build(self) -> DwellEvaluator:
        """Return the rule's runtime state."""
        return DwellEvaluator(
            self,
            self.zones,
            IncidentType.LOITERING,
            self.limit_s + self.trigger_delay_s,
            self.exit_grace_s,
            self.update_every_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CrowdingRule(RuleSettings):
    """At least `min_count` objects in a zone for `trigger_delay_s`.

    Attributes:
        zones: watched zones; each has its own incident.
        min_count: occupancy at which the zone counts as crowded. Raise it
            for places that are busy by design.
        release_margin: the incident ends only once occupancy falls below
            `min_count - release_margin`. Raise it to stop a count that
            hovers around the threshold from ending and restarting.
        release_delay_s: occupancy must stay below the release level this
            long before the incident ends.
        update_every_s: an update with the new count is sent at most this
            often while the incident is open; 0 sends none.
    """

    zones: tuple[Zone, ...]
    min_count: int
    release_margin: int = 2
    release_delay_s: float = 5.0
    update_every_s: float = 10.0
    classes: frozenset[str] = field(default_factory=lambda: frozenset({"person"}))

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        _require_zones(self.name, self.zones)
        if self.min_count < 1:
            raise RuleError(
                f"rule {self.name!r}: min_count={self.min_count} is invalid; "
                "use 1 or more"
            )
        if not 0 <= self.release_margin < self.min_count:
            raise RuleError(
                f"rule {self.name!r}: release_margin={self.release_margin} is invalid; "
                f"use 0 to {self.min_count - 1} (below min_count)"
            )
        require_non_negative(self.name, "release_delay_s", self.release_delay_s)
        require_non_negative(self.name, "update_every_s", self.update_every_s)

    def build(self) -> CrowdingEvaluator:
        """Return the rule's runtime state."""
        return CrowdingEvaluator(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class _StationaryRule(RuleSettings):
    """Checks and runtime state shared by the rules on still objects."""

    incident_type: ClassVar[IncidentType]
    zones: tuple[Zone, ...]
    limit_s: float
    still_radius_px: float
    missing_grace_s: float
    still_radius_m: float = 0.0

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        _check_stationary(
            self.name,
            self.zones,
            self.limit_s,
            self.still_radius_px,
            self.missing_grace_s,
        )
        require_non_negative(self.name, "still_radius_m", self.still_radius_m)
        self.require_ground("still_radius_m", self.still_radius_m)

    def build(self) -> StationaryEvaluator:
        """Return the rule's runtime state."""
        return StationaryEvaluator(
            self,
            self.zones,
            self.incident_type,
            self.limit_s + self.trigger_delay_s,
            self.still_radius_px,
            self.missing_grace_s,
            self.still_radius_m,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonedObjectRule(_StationaryRule):
    """A bag or suitcase that stays still in a zone longer than `limit_s`.

    Attributes:
        zones: watched zones.
        limit_s: time still after which the incident starts. Raise it where
            people put bags down for a while (benches, queues).
        still_radius_px: the object counts as still while its anchor stays
            within this distance of where it settled. Raise it for jittery
            boxes; lower it to notice small moves.
        still_radius_m: the same radius in metres on the ground plane. When
            above 0 it replaces `still_radius_px`, so objects far from the
            camera get the same tolerance as near ones.
        missing_grace_s: detector time for which the object may be missed
            (someone stands in front of it) without counting as gone.
    """

    zones: tuple[Zone, ...]
    limit_s: float = 60.0
    still_radius_px: float = 15.0
    missing_grace_s: float = 10.0
    classes: frozenset[str] = BAGGAGE_CLASSES

    incident_type: ClassVar[IncidentType] = IncidentType.ABANDONED_OBJECT


@dataclass(frozen=True, slots=True, kw_only=True)
class StoppedVehicleRule(_StationaryRule):
    """A vehicle stationary in a no-stopping zone longer than `limit_s`.

    Attributes:
        zones: no-stopping zones.
        limit_s: time still after which the incident starts. Raise it to
            allow short drop-offs; lower it on motorway shoulders.
        still_radius_px: the vehicle counts as still while its anchor stays
            within this distance of where it settled.
        still_radius_m: the same radius in metres on the ground plane; when
            above 0 it replaces `still_radius_px`.
        missing_grace_s: detector time for which the vehicle may be missed
            (a lorry passing in front) without counting as gone.
    """

    zones: tuple[Zone, ...]
    limit_s: float = 30.0
    still_radius_px: float = 20.0
    missing_grace_s: float = 10.0
    classes: frozenset[str] = VEHICLE_CLASSES

    incident_type: ClassVar[IncidentType] = IncidentType.STOPPED_VEHICLE


def _check_stationary(
    rule: str, zones: tuple[Zone, ...], limit_s: float, radius_px: float, grace_s: float
) -> None:
    _require_zones(rule, zones)
    require_positive(rule, "limit_s", limit_s)
    require_positive(rule, "still_radius_px", radius_px)
    require_non_negative(rule, "missing_grace_s", grace_s)


@dataclass(slots=True)
class _ZoneCrowd:
    count: int = 0
    peak: int = 0
    above_since: Moment | None = None
    below_since: Moment | None = None


class CrowdingEvaluator:
    """Occupancy per zone with a trigger delay and release hysteresis."""

    def __init__(self, settings: CrowdingRule) -> None:
        self.settings = settings
        self._book = IncidentBook(
            settings.name, IncidentType.CROWDING, settings.severity, settings.cooldown_s
        )
        self._zones = {zone.name: _ZoneCrowd() for zone in settings.zones}

    def open_keys(self) -> list[str]:
        """Return the names of crowded zones."""
        return [name for name in self._zones if self._book.is_open(name)]

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Count each zone on detector frames and return incident events."""
        events: list[IncidentEvent] = []
        # On frames the detector skipped, the last measured count is kept.
        if frame.detection_ran:
            self._count(frame)
        for zone in self.settings.zones:
            events.extend(self._advance(zone.name, frame.now))
        return events

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and reset the timers."""
        self._zones = {zone.name: _ZoneCrowd() for zone in self.settings.zones}
        return self._book.end_all(now)

    def _count(self, frame: FrameView) -> None:
        points = [
            self.settings.anchor.point(view.xyxy)
            for view in frame.objects
            if view.detected and self.settings.watches(view)
        ]
        for zone in self.settings.zones:
            crowd = self._zones[zone.name]
            crowd.count = sum(1 for point in points if zone.contains(point))

    def _advance(self, name: str, now: Moment) -> list[IncidentEvent]:
        crowd = self._zones[name]
        rule = self.settings
        if crowd.count >= rule.min_count:
            crowd.below_since = None
            crowd.above_since = crowd.above_since or now
            crowd.peak = max(crowd.peak, crowd.count)
            return self._start_or_update(name, crowd, now)
        crowd.above_since = None
        if not self._book.is_open(name):
            crowd.peak = 0
            return []
        if crowd.count >= rule.min_count - rule.release_margin:
            crowd.below_since = None
            return []
        crowd.below_since = crowd.below_since or now
        if now.pts_s - crowd.below_since.pts_s < rule.release_delay_s:
            return []
        event = self._book.end(
            name, now, ended_at=crowd.below_since.at, detail=self._detail(crowd)
        )
        crowd.peak = 0
        crowd.below_since = None
        return [event] if event is not None else []

    def _start_or_update(
        self, name: str, crowd: _ZoneCrowd, now: Moment
    ) -> list[IncidentEvent]:
        assert crowd.above_since is not None  # noqa: S101 - set by the caller
        if self._book.is_open(name):
            if self.settings.update_every_s <= 0:
                return []
            event = self._book.update(
                name, now, self._detail(crowd), self.settings.update_every_s
            )
        elif now.pts_s - crowd.above_since.pts_s >= self.settings.trigger_delay_s:
            event = self._book.start(name, now, zone=name, detail=self._detail(crowd))
        else:
            event = None
        return [event] if event is not None else []

    def _detail(self, crowd: _ZoneCrowd) -> dict[str, int]:
        return {
            "count": crowd.count,
            "peak_count": crowd.peak,
            "threshold": self.settings.min_count,
        }
