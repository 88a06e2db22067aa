"""Dwell in a zone per object: the shared core of intrusion and loitering.

A visit starts at the first observation of the object's anchor inside the
zone. It lasts while the object is inside or has been outside for less than
`exit_grace_s`, so a box that flickers across the edge does not start a new
visit. Only measured positions move a visit: frames where the detector did
not run, and frames where the tracker only predicted the box, never count as
leaving, so a person standing still under a skipped detector keeps dwelling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import FrameView, ObjectView, RuleSettings, Zone

logger = logging.getLogger(__name__)

# A track that has not been on any frame for this long is dropped even when
# the tracker never reported its end, so state stays bounded on a 24/7 stream.
STALE_TRACK_S = 60.0

VisitKey = tuple[int, str]


@dataclass(slots=True)
class _Visit:
    class_name: str
    entered: Moment
    last_inside: Moment
    last_seen_pts_s: float
    outside_since: Moment | None = None


class DwellEvaluator:
    """Raises an incident once a visit lasts `threshold_s`; ends it on exit."""

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
        self._book = IncidentBook(
            settings.name, incident_type, settings.severity, settings.cooldown_s
        )
        self._visits: dict[VisitKey, _Visit] = {}

    def open_keys(self) -> list[VisitKey]:
        """Return the (track id, zone name) keys of open incidents."""
        return [key for key in self._visits if self._book.is_open(key)]

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Advance visits by one frame and return incident events."""
        now = frame.now
        for view in frame.objects:
            if self.settings.watches(view):
                self._observe(frame, view)
        events = self._end_tracks(frame.ended_track_ids, now)
        for key in list(self._visits):
            events.extend(self._advance(key, now))
        self._book.forget_cooldowns(now.pts_s)
        return events

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and forget all visits."""
        self._visits.clear()
        return self._book.end_all(now)

    def _observe(self, frame: FrameView, view: ObjectView) -> None:
        now = frame.now
        observed = frame.observed(view)
        point = self.settings.anchor.point(view.xyxy)
        for zone in self._zones:
            key = (view.track_id, zone.name)
            visit = self._visits.get(key)
            if visit is not None:
                visit.last_seen_pts_s = now.pts_s
            if not observed:
                continue
            inside = zone.contains(point)
            if visit is None:
                if inside:
                    self._visits[key] = _Visit(view.class_name, now, now, now.pts_s)
                continue
            if inside:
                visit.last_inside = now
                visit.outside_since = None
            elif visit.outside_since is None:
                visit.outside_since = now

    def _advance(self, key: VisitKey, now: Moment) -> list[IncidentEvent]:
        visit = self._visits[key]
        if visit.outside_since is not None:
            if now.pts_s - visit.outside_since.pts_s >= self._exit_grace_s:
                return self._close(key, now, visit.outside_since)
            return []
        if now.pts_s - visit.last_seen_pts_s >= STALE_TRACK_S:
            return self._close(key, now, visit.last_inside)
        dwell_s = now.pts_s - visit.entered.pts_s
        if dwell_s < self._threshold_s:
            return []
        detail = self._detail(dwell_s)
        if self._book.is_open(key):
            if self._update_every_s <= 0:
                return []
            event = self._book.update(key, now, detail, self._update_every_s)
        else:
            event = self._book.start(
                key, now, zone=key[1], class_name=visit.class_name, detail=detail
            )
        return [event] if event is not None else []

    def _detail(self, dwell_s: float) -> dict[str, float]:
        # Whole seconds, so an update is sent when the dwell grew, not on
        # every frame.
        return {"dwell_s": float(int(dwell_s)), "threshold_s": self._threshold_s}

    def _end_tracks(self, ended: frozenset[int], now: Moment) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        for key in [key for key in self._visits if key[0] in ended]:
            visit = self._visits[key]
            events.extend(
                self._close(key, now, visit.outside_since or visit.last_inside)
            )
        return events

    def _close(self, key: VisitKey, now: Moment, left: Moment) -> list[IncidentEvent]:
        visit = self._visits.pop(key)
        if not self._book.is_open(key):
            return []
        dwell_s = left.pts_s - visit.entered.pts_s
        event = self._book.end(key, now, ended_at=left.at, detail=self._detail(dwell_s))
        return [event] if event is not None else []
