"""Settings shared by every rule, and the per-frame view that rules read.

Rule settings are plain frozen dataclasses; the node's pydantic config maps
onto their constructors. Zones and lines come in already scaled to the
stream's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.analytics.geometry import NAME_PATTERN, Polygon, Segment, check_name
from edge.analytics.geometry import Point as GeometryPoint
from edge.incidents.lifecycle import IncidentEvent, Moment, Severity
from edge.incidents.schedule import ArmingSchedule
from edge.types import Anchor

Point = tuple[float, float]
Box = tuple[float, float, float, float]


class RuleError(ValueError):
    """Rule settings that cannot work; the message names the field and fix."""


@dataclass(frozen=True, slots=True)
class Zone:
    """A named zone: a polygon already scaled to the stream's pixels.

    Attributes:
        name: zone name as it appears in incidents.
        polygon: the outline; points on its edge count as inside.
    """

    name: str
    polygon: Polygon

    def __post_init__(self) -> None:
        check_name(self.name, "zone")

    @classmethod
    def from_points(cls, name: str, points: Sequence[Point]) -> Zone:
        """Build a zone from (x, y) pixel points in drawing order."""
        vertices = tuple(GeometryPoint(float(x), float(y)) for x, y in points)
        return cls(name, Polygon(vertices, name=f"zone {name!r}"))

    def contains(self, point: Point) -> bool:
        """Return True when `point` is inside the zone or on its edge."""
        return self.polygon.contains(GeometryPoint(point[0], point[1]))


@dataclass(frozen=True, slots=True)
class Line:
    """A named line segment already scaled to the stream's pixels.

    Attributes:
        name: line name as it appears in incidents.
        segment: the segment from its first to its second point.
    """

    name: str
    segment: Segment

    def __post_init__(self) -> None:
        check_name(self.name, "line")
        if self.segment.length <= 0:
            raise RuleError(
                f"line {self.name!r} has zero length ({self.segment}); give two "
                "different points"
            )

    @classmethod
    def from_points(cls, name: str, start: Point, end: Point) -> Line:
        """Build a line from two (x, y) pixel points."""
        return cls(name, Segment(GeometryPoint(*start), GeometryPoint(*end)))


class GroundMeasure(Protocol):
    """Ground-plane model that turns pixels into metres, NaN beyond the horizon."""

    def size_m(self, xyxy: Box) -> float:
        """Return the object's larger extent in metres."""
        ...

    def distance_m(self, a_xy: Sequence[float], b_xy: Sequence[float]) -> float:
        """Return the ground distance in metres between two pixel points."""
        ...

    def to_world_point(self, x: float, y: float) -> tuple[float, float]:
        """Map one pixel point to (east, north) metres."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSettings:
    """Fields every rule has.

    Attributes:
        name: rule name in incidents; unique on the node.
        classes: class names the rule watches, such as {'person'}.
        severity: severity of the incidents the rule raises.
        min_size_px: objects whose box's longer side is shorter than this
            are ignored. Raise it to drop far-away or spurious small boxes;
            lower it for distant cameras.
        min_size_m: the same limit in metres on the ground plane, and 0
            turns it off. At most one of `min_size_px` and `min_size_m` is set.
        ground_plane: converts pixels to metres for the rule's fields in
            metres. It is required when one of them is set.
        trigger_delay_s: how long the condition must hold before an
            incident starts. Raise it to ignore brief passes and detector
            flicker; lower it to alert sooner.
        cooldown_s: after an incident ends, the same rule and object (or
            zone) cannot start another one for this long. Raise it to cut
            repeats from an object going in and out.
        schedule: when the rule is armed; None means always. Disarming ends
            open incidents.
        evidence: attach an anonymised JPEG to the start event.
        anchor: point of the box that stands for the object's position.
    """

    name: str
    classes: frozenset[str]
    severity: Severity = Severity.MEDIUM
    min_size_px: float = 0.0
    min_size_m: float = 0.0
    ground_plane: GroundMeasure | None = None
    trigger_delay_s: float = 0.0
    cooldown_s: float = 30.0
    schedule: ArmingSchedule | None = None
    evidence: bool = False
    anchor: Anchor = Anchor.BOTTOM_CENTER

    def __post_init__(self) -> None:
        require_rule_name(self.name)
        if not self.classes:
            raise RuleError(f"rule {self.name!r}: classes is empty; list at least one")
        for field_name in (
            "min_size_px",
            "min_size_m",
            "trigger_delay_s",
            "cooldown_s",
        ):
            require_non_negative(self.name, field_name, getattr(self, field_name))
        if self.min_size_m > 0 and self.min_size_px > 0:
            raise RuleError(
                f"rule {self.name!r}: min_size_px={self.min_size_px} and "
                f"min_size_m={self.min_size_m} are both set; keep one of them"
            )
        self.require_ground("min_size_m", self.min_size_m)

    def require_ground(self, field_name: str, value: float) -> None:
        """Raise RuleError when a field in metres is set without a ground plane."""
        if value > 0 and self.ground_plane is None:
            px_name = field_name.removesuffix("_m") + "_px"
            raise RuleError(
                f"rule {self.name!r}: {field_name}={value} needs a ground plane; "
                f"run `sitlab-calibrate ground` or use {px_name}"
            )

    def watches(self, view: ObjectView) -> bool:
        """Return True when the object's class and size match the rule."""
        if view.class_name not in self.classes:
            return False
        if box_extent_px(view.xyxy) < self.min_size_px:
            return False
        if self.min_size_m > 0 and self.ground_plane is not None:
            # NaN beyond the horizon compares False, because nothing there is
            # on the ground.
            return self.ground_plane.size_m(view.xyxy) >= self.min_size_m
        return True


def require_rule_name(name: str) -> None:
    """Raise RuleError unless `name` fits the incident schema's name rule."""
    if not NAME_PATTERN.match(name):
        raise RuleError(
            f"rule name {name!r} is invalid; use 1 to 64 characters, starting "
            "with a letter or digit, then letters, digits, space, '_', '.', ':' "
            "or '-'"
        )


def require_non_negative(rule: str, field_name: str, value: float) -> None:
    """Raise RuleError when a rule's number is negative or not finite."""
    if not math.isfinite(value) or value < 0:
        raise RuleError(
            f"rule {rule!r}: {field_name}={value} is invalid; use 0 or more"
        )


def require_positive(rule: str, field_name: str, value: float) -> None:
    """Raise RuleError when a rule's number is not above zero."""
    if not math.isfinite(value) or value <= 0:
        raise RuleError(
            f"rule {rule!r}: {field_name}={value} is invalid; use more than 0"
        )


def box_extent_px(xyxy: Box) -> float:
    """Return the longer side of a box in pixels."""
    left, top, right, bottom = xyxy
    return max(right - left, bottom - top)


@dataclass(frozen=True, slots=True)
class ObjectView:
    """One confirmed track on one frame, with its class name resolved.

    Attributes:
        track_id: tracker id; used as a key on the node, never reported.
        class_name: class name of the model.
        xyxy: box in frame pixels (a prediction when `detected` is False).
        detected: a detection was matched to the track on this frame.
        speed_kmh: ground speed in km/h, or None without a ground plane or
            while the track is too new for a speed.
    """

    track_id: int
    class_name: str
    xyxy: Box
    detected: bool
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class FrameView:
    """The part of one tracked frame that rules read.

    Attributes:
        now: stream time and UTC time of the frame.
        detection_ran: False when the detector skipped the frame; rules then
            treat objects as not observed, never as gone.
        objects: confirmed tracks on the frame.
        ended_track_ids: tracks the tracker dropped on this frame.
    """

    now: Moment
    detection_ran: bool
    objects: tuple[ObjectView, ...]
    ended_track_ids: frozenset[int]

    def observed(self, view: ObjectView) -> bool:
        """Return True when the object's position on this frame is measured."""
        return self.detection_ran and view.detected


class RuleState(Protocol):
    """Runtime state of one rule; the engine feeds it every frame."""

    @property
    def settings(self) -> RuleSettings:
        """The rule's settings."""
        ...

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Advance the rule by one frame and return the incident events."""
        ...

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and clear state because the rule is disarmed."""
        ...

    def open_keys(self) -> Sequence[Hashable]:
        """Return the keys of open incidents (for tests and status)."""
        ...
