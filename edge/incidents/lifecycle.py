"""Incident events and the start/update/end bookkeeping shared by all rules."""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from edge.messages import utc_iso

logger = logging.getLogger(__name__)

Phase = Literal["start", "update", "end"]
DetailValue = float | int | bool | str
# Detail keys that would leak who or where someone was; the schema rejects
# them too, but failing here names the rule that tried.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "track_id",
        "track",
        "trajectory",
        "path",
        "box",
        "bbox",
        "xyxy",
        "image",
        "face",
        "plate",
    }
)


class Severity(enum.StrEnum):
    """Incident severity, lowest first."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class IncidentType(enum.StrEnum):
    """Incident types of the wire schema."""

    INTRUSION = "intrusion"
    LOITERING = "loitering"
    CROWDING = "crowding"
    WRONG_WAY = "wrong_way"
    ABANDONED_OBJECT = "abandoned_object"
    STOPPED_VEHICLE = "stopped_vehicle"
    SPEEDING = "speeding"
    TAMPERING = "tampering"
    CAMERA_OFFLINE = "camera_offline"
    NODE_DEGRADED = "node_degraded"


@dataclass(frozen=True, slots=True)
class Moment:
    """A point in the stream: stream seconds for durations, UTC for reports."""

    pts_s: float
    at: datetime


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One phase of an incident, ready to become an `incident` message.

    Attributes:
        incident_id: uuid4 shared by the start, updates and end.
        phase: 'start', 'update' or 'end'.
        type: incident type.
        rule: name of the rule that raised it.
        severity: severity of the rule.
        started_at: UTC time the incident started.
        ended_at: UTC time it ended; set on 'end' only.
        zone: zone name, for zone rules.
        line: line name, for line rules.
        class_name: object class, for object rules.
        detail: numbers and short strings; never ids, boxes or positions.
        evidence: the schema's evidence object, for rules with evidence on.
    """

    incident_id: str
    phase: Phase
    type: IncidentType
    rule: str
    severity: Severity
    started_at: datetime
    ended_at: datetime | None = None
    zone: str | None = None
    line: str | None = None
    class_name: str | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)
    evidence: Mapping[str, Any] | None = None

    def to_body(self) -> dict[str, Any]:
        """Return the incident fields of the message, without the envelope."""
        body: dict[str, Any] = {
            "incident_id": self.incident_id,
            "phase": self.phase,
            "type": str(self.type),
            "rule": self.rule,
            "severity": str(self.severity),
            "started_at": utc_iso(self.started_at),
        }
        if self.ended_at is not None:
            body["ended_at"] = utc_iso(self.ended_at)
        optional = {"zone": self.zone, "line": self.line, "class": self.class_name}
        body.update({key: value for key, value in optional.items() if value})
        if self.detail:
            body["detail"] = dict(self.detail)
        if self.evidence is not None:
            body["evidence"] = dict(self.evidence)
        return body


@dataclass(slots=True)
class _OpenIncident:
    event: IncidentEvent
    last_update_pts_s: float


class IncidentBook:
    """Open incidents and cooldowns of one rule, keyed by track or zone.

    A key is whatever makes an incident unique for the rule: `(track_id,
    zone)` for object rules, the zone for crowding, a constant for
    frame-level rules. At most one incident is open per key, and after an
    end the key cannot start again until `cooldown_s` stream seconds passed.
    """

    def __init__(
        self,
        rule: str,
        incident_type: IncidentType,
        severity: Severity,
        cooldown_s: float,
    ) -> None:
        self._rule = rule
        self._type = incident_type
        self._severity = severity
        self._cooldown_s = cooldown_s
        self._open: dict[Hashable, _OpenIncident] = {}
        self._ended_pts_s: dict[Hashable, float] = {}

    def is_open(self, key: Hashable) -> bool:
        """Return True while an incident is open for `key`."""
        return key in self._open

    def open_keys(self) -> list[Hashable]:
        """Return the keys of all open incidents."""
        return list(self._open)

    def can_start(self, key: Hashable, pts_s: float) -> bool:
        """Return True when `key` has no open incident and is out of cooldown."""
        if key in self._open:
            return False
        ended = self._ended_pts_s.get(key)
        return ended is None or pts_s - ended >= self._cooldown_s

    def start(
        self,
        key: Hashable,
        now: Moment,
        *,
        zone: str | None = None,
        line: str | None = None,
        class_name: str | None = None,
        detail: Mapping[str, DetailValue] | None = None,
    ) -> IncidentEvent | None:
        """Open an incident for `key`; return its start event, or None.

        Returns None while `key` is open or cooling down.
        """
        if not self.can_start(key, now.pts_s):
            return None
        event = IncidentEvent(
            incident_id=str(uuid.uuid4()),
            phase="start",
            type=self._type,
            rule=self._rule,
            severity=self._severity,
            started_at=now.at,
            zone=zone,
            line=line,
            class_name=class_name,
            detail=_checked_detail(self._rule, detail),
        )
        self._open[key] = _OpenIncident(event, now.pts_s)
        logger.info(
            "incident %s started: rule %s type %s",
            event.incident_id,
            self._rule,
            self._type,
        )
        return event

    def update(
        self,
        key: Hashable,
        now: Moment,
        detail: Mapping[str, DetailValue],
        min_interval_s: float = 0.0,
    ) -> IncidentEvent | None:
        """Emit an update with new detail, at most every `min_interval_s`.

        Returns None when `key` has no open incident, the detail did not
        change, or the last update is more recent than `min_interval_s`.
        """
        current = self._open.get(key)
        if current is None:
            return None
        checked = _checked_detail(self._rule, detail)
        if checked == current.event.detail:
            return None
        if now.pts_s - current.last_update_pts_s < min_interval_s:
            return None
        current.event = replace(current.event, phase="update", detail=checked)
        current.last_update_pts_s = now.pts_s
        return current.event

    def end(
        self,
        key: Hashable,
        now: Moment,
        ended_at: datetime | None = None,
        detail: Mapping[str, DetailValue] | None = None,
    ) -> IncidentEvent | None:
        """Close the incident of `key`; return its end event, or None.

        Args:
            key: incident key.
            now: the moment the end is decided; the cooldown runs from here.
            ended_at: when the condition actually stopped, if earlier than
                `now` (for example when the object left, before the grace
                gap ran out).
            detail: final detail; the last detail is kept when None.
        """
        current = self._open.pop(key, None)
        if current is None:
            return None
        self._ended_pts_s[key] = now.pts_s
        # The condition can stop during the grace or trigger delay that
        # preceded the start, when an object leaves while its presence is
        # still being confirmed. An incident never ends before it started.
        ended = max(ended_at or now.at, current.event.started_at)
        event = replace(
            current.event,
            phase="end",
            ended_at=ended,
            detail=current.event.detail
            if detail is None
            else _checked_detail(self._rule, detail),
        )
        logger.info("incident %s ended: rule %s", event.incident_id, self._rule)
        return event

    def end_all(self, now: Moment) -> list[IncidentEvent]:
        """Close every open incident, for example when the rule is disarmed."""
        events = [self.end(key, now) for key in list(self._open)]
        return [event for event in events if event is not None]

    def forget_cooldowns(self, pts_s: float) -> None:
        """Drop cooldown entries that have run out, so memory stays bounded."""
        expired = [
            k for k, t in self._ended_pts_s.items() if pts_s - t >= self._cooldown_s
        ]
        for key in expired:
            del self._ended_pts_s[key]


def _checked_detail(
    rule: str, detail: Mapping[str, DetailValue] | None
) -> dict[str, DetailValue]:
    if not detail:
        return {}
    leaked = sorted(set(detail) & FORBIDDEN_DETAIL_KEYS)
    if leaked:
        raise ValueError(
            f"rule {rule!r} put {leaked} in an incident detail; details carry "
            "numbers and short strings only, never ids, boxes or positions"
        )
    return {key: _rounded(value) for key, value in detail.items()}


def _rounded(value: DetailValue) -> DetailValue:
    if isinstance(value, float):
        return round(value, 3)
    return value
