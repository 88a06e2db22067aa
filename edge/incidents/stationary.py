"""Objects that stay put in a zone: the core of abandoned objects and stopped vehicles.

An object is stationary while its anchor stays within `still_radius_px` of
where it settled, or within `still_radius_m` on the ground plane when the
radius is given in metres. Frames where the detector did not run say nothing about
the object, so only detector frames that miss it add to its missing time. A
gap shorter than `missing_grace_s` (a person walking past the bag) neither
resets nor ends anything. When the tracker drops the track during such a
gap and a new track of the same class reappears within the radius, the new
track takes over the old one's timer and incident.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import FrameView, ObjectView, Point, RuleSettings, Zone

# A radius in metres set to this value is off, and the pixel radius applies.
RADIUS_OFF = 0.0

StillKey = tuple[int, str]


@dataclass(slots=True)
class _Still:
    serial: int
    class_name: str
    zone: str
    settled_at: Point
    still_since: Moment
    last_detected: Moment
    track_id: int | None
    missing_s: float = 0.0


class StationaryEvaluator:
    """Raises an incident once an object stays still in a zone for `limit_s`."""

    def __init__(  # noqa: PLR0917 - built only by the rule classes
        self,
        settings: RuleSettings,
        zones: tuple[Zone, ...],
        incident_type: IncidentType,
        limit_s: float,
        still_radius_px: float,
        missing_grace_s: float,
        still_radius_m: float = RADIUS_OFF,
    ) -> None:
        self.settings = settings
        self._zones = zones
        self._limit_s = limit_s
        self._radius_px = still_radius_px
        self._radius_m = still_radius_m
        self._missing_grace_s = missing_grace_s
        self._book = IncidentBook(
            settings.name, incident_type, settings.severity, settings.cooldown_s
        )
        self._objects: dict[StillKey, _Still] = {}
        self._serials = itertools.count()
        self._last_detection_pts_s: float | None = None
        # The book's cooldown is per settled object; this one is per
        # (track, zone), so an object put down again right away stays quiet.
        self._cooldown_from: dict[tuple[int | None, str], float] = {}

    def open_keys(self) -> list[StillKey]:
        """Return the (track id, zone name) keys of open incidents."""
        keys = []
        for (_, zone), still in self._objects.items():
            if self._book.is_open((still.serial, zone)) and still.track_id is not None:
                keys.append((still.track_id, zone))
        return keys

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Advance stationary timers by one frame and return incident events."""
        now = frame.now
        events: list[IncidentEvent] = []
        self._release_ended(frame.ended_track_ids)
        if frame.detection_ran:
            seen: set[StillKey] = set()
            for view in frame.objects:
                if self.settings.watches(view) and frame.observed(view):
                    events.extend(self._observe(view, now, seen))
            events.extend(self._count_missing(now, seen))
            self._last_detection_pts_s = now.pts_s
        for key in list(self._objects):
            events.extend(self._advance(key, now))
        self._book.forget_cooldowns(now.pts_s)
        self._forget_cooldowns(now.pts_s)
        return events

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and forget all objects."""
        self._objects.clear()
        self._cooldown_from.clear()
        return self._book.end_all(now)

    def _release_ended(self, ended: frozenset[int]) -> None:
        # An ended track keeps its timer as an orphan until missing_grace_s
        # runs out, so a new track at the same spot can adopt it.
        for still in self._objects.values():
            if still.track_id in ended:
                still.track_id = None

    def _observe(
        self, view: ObjectView, now: Moment, seen: set[StillKey]
    ) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        point = self.settings.anchor.point(view.xyxy)
        for zone in self._zones:
            key = self._find(view, zone.name, point)
            if not zone.contains(point):
                if key is not None:
                    events.extend(self._drop(key, now))
                continue
            if key is None:
                key = self._create(view, zone.name, point, now)
            seen.add(key)
            still = self._objects[key]
            still.last_detected = now
            still.missing_s = 0.0
            if not self._within_radius(point, still.settled_at):
                events.extend(self._restart(key, point, now))
        return events

    def _find(self, view: ObjectView, zone: str, point: Point) -> StillKey | None:
        for key, still in self._objects.items():
            if still.zone == zone and still.track_id == view.track_id:
                return key
        for key, still in self._objects.items():
            orphan = still.track_id is None and still.zone == zone
            if (
                orphan
                and still.class_name == view.class_name
                and self._within_radius(point, still.settled_at)
            ):
                still.track_id = view.track_id
                return key
        return None

    def _within_radius(self, point: Point, settled_at: Point) -> bool:
        ground = self.settings.ground_plane
        if self._radius_m > RADIUS_OFF and ground is not None:
            # NaN beyond the horizon compares False, so such a point never
            # counts as still.
            return ground.distance_m(point, settled_at) <= self._radius_m
        return math.dist(point, settled_at) <= self._radius_px

    def _create(
        self, view: ObjectView, zone: str, point: Point, now: Moment
    ) -> StillKey:
        serial = next(self._serials)
        key = (serial, zone)
        self._objects[key] = _Still(
            serial, view.class_name, zone, point, now, now, view.track_id
        )
        return key

    def _restart(self, key: StillKey, point: Point, now: Moment) -> list[IncidentEvent]:
        still = self._objects[key]
        still.settled_at = point
        still.still_since = now
        return self._end_incident(key, still, now, now)

    def _count_missing(self, now: Moment, seen: set[StillKey]) -> list[IncidentEvent]:
        step_s = (
            0.0
            if self._last_detection_pts_s is None
            else now.pts_s - self._last_detection_pts_s
        )
        events: list[IncidentEvent] = []
        for key in [key for key in self._objects if key not in seen]:
            still = self._objects[key]
            still.missing_s += step_s
            if still.missing_s > self._missing_grace_s:
                events.extend(self._drop(key, now))
        return events

    def _advance(self, key: StillKey, now: Moment) -> list[IncidentEvent]:
        still = self._objects[key]
        still_s = now.pts_s - still.still_since.pts_s
        if still_s < self._limit_s or self._book.is_open(key):
            return []
        cooldown_key = (still.track_id, still.zone)
        ended = self._cooldown_from.get(cooldown_key)
        if ended is not None and now.pts_s - ended < self.settings.cooldown_s:
            return []
        event = self._book.start(
            key,
            now,
            zone=still.zone,
            class_name=still.class_name,
            detail={"stationary_s": float(int(still_s)), "threshold_s": self._limit_s},
        )
        return [event] if event is not None else []

    def _drop(self, key: StillKey, now: Moment) -> list[IncidentEvent]:
        still = self._objects.pop(key)
        return self._end_incident(key, still, now, still.last_detected)

    def _end_incident(
        self, key: StillKey, still: _Still, now: Moment, ended: Moment
    ) -> list[IncidentEvent]:
        event = self._book.end(key, now, ended_at=ended.at)
        if event is None:
            return []
        if still.track_id is not None:
            self._cooldown_from[(still.track_id, still.zone)] = now.pts_s
        return [event]

    def _forget_cooldowns(self, pts_s: float) -> None:
        cooldown_s = self.settings.cooldown_s
        expired = [k for k, t in self._cooldown_from.items() if pts_s - t >= cooldown_s]
        for key in expired:
            del self._cooldown_from[key]
