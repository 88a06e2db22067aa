"""Line rules: wrong-way crossing.

The direction of a crossing is decided from the net displacement of the
object's anchor over the last `window_s` seconds, not from the one step that
touched the line. A box jittering on the line therefore moves too little
across it to count as a crossing against the allowed direction. With a
ground plane the least travel can be given in metres, measured square to
the line on the ground, so it means the same near and far from the camera.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from edge.analytics.geometry import Point as GeometryPoint
from edge.analytics.geometry import Segment
from edge.incidents.lifecycle import IncidentBook, IncidentEvent, IncidentType, Moment
from edge.incidents.rules import (
    FrameView,
    Line,
    ObjectView,
    Point,
    RuleError,
    RuleSettings,
    require_non_negative,
    require_positive,
)

CrossKey = tuple[int, str]
# A track not seen for this long loses its position history.
_STALE_TRACK_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WrongWayRule(RuleSettings):
    """An object crossing a line against the allowed direction of travel.

    Attributes:
        lines: watched lines.
        allowed_direction_xy: direction of allowed travel in image
            coordinates (x right, y down), such as (0, 1) for traffic moving
            down the screen. Only its component across each line matters.
        window_s: span of anchor positions that decides the direction.
            Raise it to ignore longer wobbles; lower it for fast objects
            that cross within a fraction of a second.
        min_travel_px: the net displacement across the line within the
            window must be at least this long. Raise it for jittery boxes.
        min_travel_m: the same least travel in metres on the ground plane.
            When above 0 it replaces `min_travel_px`. The line's end points
            must lie on the visible ground.
        hold_s: the incident ends this long after the crossing, or when the
            track ends, whichever is first.
    """

    lines: tuple[Line, ...]
    allowed_direction_xy: Point
    window_s: float = 1.0
    min_travel_px: float = 10.0
    min_travel_m: float = 0.0
    hold_s: float = 5.0

    def __post_init__(self) -> None:
        RuleSettings.__post_init__(self)
        if not self.lines:
            raise RuleError(
                f"rule {self.name!r}: lines is empty; give at least one line"
            )
        require_positive(self.name, "window_s", self.window_s)
        require_non_negative(self.name, "min_travel_px", self.min_travel_px)
        require_non_negative(self.name, "min_travel_m", self.min_travel_m)
        self.require_ground("min_travel_m", self.min_travel_m)
        require_non_negative(self.name, "hold_s", self.hold_s)
        if self.min_travel_m > 0:
            self._require_lines_on_ground()
        for line in self.lines:
            if abs(_across(line, self.allowed_direction_xy)) < 1e-6:
                raise RuleError(
                    f"rule {self.name!r}: allowed_direction_xy="
                    f"{self.allowed_direction_xy} runs along line {line.name!r}; "
                    "give a direction that crosses it"
                )

    def build(self) -> WrongWayEvaluator:
        """Return the rule's runtime state."""
        return WrongWayEvaluator(self)

    def _require_lines_on_ground(self) -> None:
        assert self.ground_plane is not None  # noqa: S101 - checked by require_ground
        for line in self.lines:
            for end in (line.segment.start, line.segment.end):
                east, north = self.ground_plane.to_world_point(end.x, end.y)
                if not (math.isfinite(east) and math.isfinite(north)):
                    raise RuleError(
                        f"rule {self.name!r}: line {line.name!r} point "
                        f"({end.x:g}, {end.y:g}) is beyond the horizon of the ground "
                        "plane, so min_travel_m cannot be measured; draw the line on "
                        "the road or use min_travel_px"
                    )


def _across(line: Line, vector: Point) -> float:
    """Return the component of `vector` along the line's unit normal."""
    start, end = line.segment.start, line.segment.end
    length = line.segment.length
    normal = (-(end.y - start.y) / length, (end.x - start.x) / length)
    return vector[0] * normal[0] + vector[1] * normal[1]


@dataclass(slots=True)
class _History:
    points: deque[tuple[float, Point]]
    last_seen_pts_s: float


class WrongWayEvaluator:
    """Keeps a short anchor history per track and checks each step."""

    def __init__(self, settings: WrongWayRule) -> None:
        self.settings = settings
        self._book = IncidentBook(
            settings.name,
            IncidentType.WRONG_WAY,
            settings.severity,
            settings.cooldown_s,
        )
        self._history: dict[int, _History] = {}
        self._crossed_at: dict[CrossKey, float] = {}

    def open_keys(self) -> list[CrossKey]:
        """Return the (track id, line name) keys of open incidents."""
        return [key for key in self._crossed_at if self._book.is_open(key)]

    def process(self, frame: FrameView) -> list[IncidentEvent]:
        """Extend the histories by one frame and return incident events."""
        now = frame.now
        events: list[IncidentEvent] = []
        for view in frame.objects:
            if frame.observed(view) and self.settings.watches(view):
                events.extend(self._step(view, now))
        events.extend(self._expire(frame.ended_track_ids, now))
        self._book.forget_cooldowns(now.pts_s)
        return events

    def disarm(self, now: Moment) -> list[IncidentEvent]:
        """End open incidents and forget the histories."""
        self._history.clear()
        self._crossed_at.clear()
        return self._book.end_all(now)

    def _step(self, view: ObjectView, now: Moment) -> list[IncidentEvent]:
        point = self.settings.anchor.point(view.xyxy)
        history = self._history.get(view.track_id)
        if history is None:
            history = _History(deque(), now.pts_s)
            self._history[view.track_id] = history
        history.last_seen_pts_s = now.pts_s
        events: list[IncidentEvent] = []
        if history.points:
            previous = history.points[-1][1]
            for line in self.settings.lines:
                if _steps_over(line, previous, point):
                    events.extend(self._judge(view, line, history, point, now))
        history.points.append((now.pts_s, point))
        # Keep one position older than the window so the window is full.
        while (
            len(history.points) > 2
            and history.points[1][0] <= now.pts_s - self.settings.window_s
        ):
            history.points.popleft()
        return events

    def _judge(
        self, view: ObjectView, line: Line, history: _History, point: Point, now: Moment
    ) -> list[IncidentEvent]:
        oldest = history.points[0][1]
        travel = (point[0] - oldest[0], point[1] - oldest[1])
        across = _across(line, travel)
        allowed = _across(line, self.settings.allowed_direction_xy)
        if math.copysign(1, across) == math.copysign(1, allowed):
            return []
        detail: dict[str, float] = {
            "travel_px": round(abs(across), 1),
            "window_s": self.settings.window_s,
        }
        if self.settings.min_travel_m > 0:
            across_m = self._across_m(line, oldest, point)
            # NaN beyond the horizon compares False and raises nothing.
            if not across_m >= self.settings.min_travel_m:
                return []
            detail["travel_m"] = round(across_m, 2)
        elif abs(across) < self.settings.min_travel_px:
            return []
        key = (view.track_id, line.name)
        event = self._book.start(
            key, now, line=line.name, class_name=view.class_name, detail=detail
        )
        if event is None:
            return []
        self._crossed_at[key] = now.pts_s
        return [event]

    def _across_m(self, line: Line, oldest: Point, point: Point) -> float:
        """Return the travel from `oldest` to `point` square to `line`, in metres."""
        ground = self.settings.ground_plane
        assert ground is not None  # noqa: S101 - required with min_travel_m
        start, end = line.segment.start, line.segment.end
        start_e, start_n = ground.to_world_point(start.x, start.y)
        end_e, end_n = ground.to_world_point(end.x, end.y)
        from_e, from_n = ground.to_world_point(*oldest)
        to_e, to_n = ground.to_world_point(*point)
        line_e, line_n = end_e - start_e, end_n - start_n
        travel_e, travel_n = to_e - from_e, to_n - from_n
        cross = line_e * travel_n - line_n * travel_e
        return abs(cross) / math.hypot(line_e, line_n)

    def _expire(self, ended: frozenset[int], now: Moment) -> list[IncidentEvent]:
        events: list[IncidentEvent] = []
        for key, crossed in list(self._crossed_at.items()):
            if key[0] in ended or now.pts_s - crossed >= self.settings.hold_s:
                del self._crossed_at[key]
                event = self._book.end(key, now)
                if event is not None:
                    events.append(event)
        for track_id, history in list(self._history.items()):
            if (
                track_id in ended
                or now.pts_s - history.last_seen_pts_s >= _STALE_TRACK_S
            ):
                del self._history[track_id]
        return events


def _steps_over(line: Line, previous: Point, current: Point) -> bool:
    step = Segment(GeometryPoint(*previous), GeometryPoint(*current))
    return step.intersects(line.segment)
