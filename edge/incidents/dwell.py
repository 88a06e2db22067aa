"""Dwell in a zone per object: the shared core of intrusion and loitering.

A visit starts at the first observation of the object's anchor inside the
zone. It lasts while the object is inside or has been outside for less than
`exit_grace_s`, so a box that flickers across the edge does not start a new
visit. Only measured positions move a visit: frames where the detector did
not run, and frames where the tracker only predicted the box, never count as
leaving, so a person standing still under a skipped detector keeps dwelling.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import (
    FrameView,
    ObjectView,
    Point,
    RuleSettings,
    Zone,
    box_extent_px,
)

logger = logging.getLogger(__name__)

# A track that has not been on any frame for this long is dropped even when
# the tracker never reported its end, so state stays bounded on a 24/7 stream.
STALE_TRACK_S = 60.0

TrackZone = tuple[int, str]
# A new track continues an orphaned visit only if it enters within this many
# box sizes (longer side) of the orphan's last position. Without a limit, in
# a busy zone every newcomer would continue some earlier person's visit.
REJOIN_EXTENTS = 1.5


@dataclass(slots=True)
class _Visit:
    serial: int
    zone: str
    class_name: str
    track_id: int | None
    entered: Moment
    last_inside: Moment
    last_seen_pts_s: float
    last_point: Point
    last_extent_px: float
    outside_since: Moment | None = None
    orphan_since: Moment | None = None


class DwellEvaluator:
    """Raises an incident once a visit lasts `threshold_s`; ends it on exit.

    When the tracker ends a track while its object is inside the zone, the
    visit waits `exit_grace_s` for a new track of the same class to enter the
    zone within `REJOIN_EXTENTS` box sizes of where the object was last seen.
    If one does, the visit continues under it, so a tracker id switch does
    not split one intrusion into two incidents.
    """

    def __init__(  # noqa: PLR0917 - built only by the rule classes
        self,
        settings: RuleSettings,
        zones: tuple[Zone, ...],
        incident_type: IncidentType,
        threshold_s: float,
        exit_grace_s: float,
        update_every_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self._zones = zones
        self._threshold_s = threshold_s
        self._exit_grace_s = exit_grace_s
        self._update_every_s = update_every_s
        # Open incidents are keyed by visit, which survives a track switch;
        # the cooldown is kept here per (track, zone), as for other rules.
        self._book = IncidentBook(settings.name, incident_type, settings.severity, 0.0)
        self._cooldown_from: dict[TrackZone, float] = {}
        self._visits: dict[int, _Visit] = {}
        self._by_track: dict[TrackZone, int] = {}
        self._serials = itertools.count()

    def open_keys(self) -> list[TrackZone]:
        """Return the (track id, zone name) keys of open incidents."""
        return [
            (visit.track_id, visit.zone)
            for visit in self._visits.values()
            if visit.track_id is not None and self._book.is_open(visit.serial)
        ]

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Advance visits by one frame and return incident events."""
        now = frame.now
        events = self._orphan_tracks(frame.ended_track_ids, now)
        for view in frame.objects:
            if self.settings.watches(view):
                self._observe(frame, view)
        for serial in list(self._visits):
            events.extend(self._advance(serial, now))
        self._forget_cooldowns(now.pts_s)
        return events

    def _forget_cooldowns(self, pts_s: float) -> None:
        cooldown_s = self.settings.cooldown_s
        expired = [k for k, t in self._cooldown_from.items() if pts_s - t >= cooldown_s]
        for key in expired:
            del self._cooldown_from[key]

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and forget all visits."""
        self._visits.clear()
        self._by_track.clear()
        self._cooldown_from.clear()
        return self._book.end_all(now)

    def _observe(self, frame: FrameView, view: ObjectView) -> None:
        now = frame.now
        observed = frame.observed(view)
        point = self.settings.anchor.point(view.xyxy)
        for zone in self._zones:
            serial = self._by_track.get((view.track_id, zone.name))
            visit = self._visits.get(serial) if serial is not None else None
            if visit is not None:
                visit.last_seen_pts_s = now.pts_s
            if not observed:
                continue
            inside = zone.contains(point)
            if visit is None:
                if inside:
                    self._enter(view, zone.name, point, now)
                continue
            if inside:
                visit.last_inside = now
                visit.last_point = point
                visit.last_extent_px = box_extent_px(view.xyxy)
                visit.outside_since = None
            elif visit.outside_since is None:
                visit.outside_since = now

    def _enter(self, view: ObjectView, zone: str, point: Point, now: Moment) -> None:
        orphans = [
            visit
            for visit in self._visits.values()
            if visit.orphan_since is not None
            and visit.zone == zone
            and visit.class_name == view.class_name
            and math.dist(point, visit.last_point)
            <= REJOIN_EXTENTS * visit.last_extent_px
        ]
        if orphans:
            visit = max(orphans, key=lambda item: item.last_inside.pts_s)
            visit.orphan_since = None
            visit.track_id = view.track_id
            visit.last_inside = now
            visit.last_seen_pts_s = now.pts_s
            visit.last_point = point
        else:
            visit = _Visit(
                serial=next(self._serials),
                zone=zone,
                class_name=view.class_name,
                track_id=view.track_id,
                entered=now,
                last_inside=now,
                last_seen_pts_s=now.pts_s,
                last_point=point,
                last_extent_px=box_extent_px(view.xyxy),
            )
            self._visits[visit.serial] = visit
        self._by_track[(view.track_id, zone)] = visit.serial

    def _advance(self, serial: int, now: Moment) -> list[IncidentEvent]:
        visit = self._visits[serial]
        if visit.orphan_since is not None:
            if now.pts_s - visit.orphan_since.pts_s >= self._exit_grace_s:
                return self._close(serial, now, visit.last_inside)
            return []
        if visit.outside_since is not None:
            if now.pts_s - visit.outside_since.pts_s >= self._exit_grace_s:
                return self._close(serial, now, visit.outside_since)
            return []
        if now.pts_s - visit.last_seen_pts_s >= STALE_TRACK_S:
            return self._close(serial, now, visit.last_inside)
        return self._judge_dwell(visit, now)

    def _judge_dwell(self, visit: _Visit, now: Moment) -> list[IncidentEvent]:
        dwell_s = now.pts_s - visit.entered.pts_s
        if dwell_s < self._threshold_s:
            return []
        detail = self._detail(dwell_s)
        if self._book.is_open(visit.serial):
            if self._update_every_s <= 0:
                return []
            event = self._book.update(visit.serial, now, detail, self._update_every_s)
        elif self._cooling_down(visit, now):
            event = None
        else:
            event = self._book.start(
                visit.serial,
                now,
                zone=visit.zone,
                class_name=visit.class_name,
                detail=detail,
            )
        return [event] if event is not None else []

    def _cooling_down(self, visit: _Visit, now: Moment) -> bool:
        if visit.track_id is None:
            return False
        ended = self._cooldown_from.get((visit.track_id, visit.zone))
        return ended is not None and now.pts_s - ended < self.settings.cooldown_s

    def _detail(self, dwell_s: float) -> dict[str, float]:
        # Whole seconds, so an update is sent when the dwell grew, not on
        # every frame.
        return {"dwell_s": float(int(dwell_s)), "threshold_s": self._threshold_s}

    def _orphan_tracks(self, ended: frozenset[int], now: Moment) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        for key in [key for key in self._by_track if key[0] in ended]:
            serial = self._by_track.pop(key)
            visit = self._visits[serial]
            visit.track_id = None
            if visit.outside_since is not None:
                events.extend(self._close(serial, now, visit.outside_since))
            else:
                visit.orphan_since = now
        return events

    def _close(self, serial: int, now: Moment, left: Moment) -> list[IncidentEvent]:
        visit = self._visits.pop(serial)
        if visit.track_id is not None:
            self._by_track.pop((visit.track_id, visit.zone), None)
        if not self._book.is_open(serial):
            return []
        if visit.track_id is not None:
            self._cooldown_from[(visit.track_id, visit.zone)] = now.pts_s
        dwell_s = left.pts_s - visit.entered.pts_s
        detail = self._detail(dwell_s)
        event = self._book.end(serial, now, ended_at=left.at, detail=detail)
        return [event] if event is not None else []
