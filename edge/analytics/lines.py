"""Counting line crossings of tracked objects, with a hysteresis band.

Which side is "in": stand at the line's start A and look towards its end B,
as drawn on screen (image y grows downwards). An object that crosses from the
left-hand side of that arrow to the right-hand side moves `in`; the opposite
move is `out`. In numbers, for an anchor P,
cross = (Bx-Ax)*(Py-Ay) - (By-Ay)*(Px-Ax) is positive on the right-hand side,
so moving from cross < 0 to cross > 0 is `in`. For example, a line drawn
from (0, 500) to (1000, 500) counts downward motion as `in`. A line drawn
from (320, 0) to (320, 480), pointing down the screen, counts right-to-left
motion as `in`. Swapping the two points swaps `in` and `out`.

When a crossing counts:

1. Only detected positions move the state (`Track.detected` is True and the
   detector ran on the frame). Kalman predictions on coasting frames never
   cause a crossing; the next detected position is joined to the last
   detected one, so an object that passes the line while coasting still
   counts once it is detected again.
2. The path between consecutive detected anchors is a straight step. The
   side change counts only if the step (or the steps through points exactly
   on the line) touches the line segment itself, endpoints included, so an
   object that passes beyond the end of the segment does not count. A fast
   object that jumps over the line between two frames does count.
3. The object must settle on the new side: its anchor must get at least
   `hysteresis_px` from the line, measured perpendicular, after being at
   least as far on the old side. Jitter inside the band never counts, in
   either direction. A track first seen inside the band starts on the side
   of that first anchor, so a person who appears a few pixels from the line
   and walks away across it still counts once. An id switch at the line
   does not count twice: the new track starts on the side where the object
   already is.
4. Each track counts at most once per direction per line, with the class the
   track has on the frame of the count.
5. A track that is not confirmed keeps its history from the first sighting.
   Its crossing is held and counts on the frame the track becomes confirmed,
   unless it crossed back before that (then neither counts). A track that
   ends unconfirmed never counts.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from edge.analytics.geometry import (
    GeometryError,
    Point,
    ReferenceFrame,
    Segment,
    check_name,
    parse_anchor,
)
from edge.types import Anchor, Track

logger = logging.getLogger(__name__)

DEFAULT_HYSTERESIS_PX = 10.0
# Per-track state is purged by `forget`; this bound only protects a node
# whose tracker never reports ended tracks. Past it, the least recently seen
# track is dropped.
DEFAULT_MAX_TRACKS = 4096


class Direction(StrEnum):
    """Direction of a crossing; see the module docstring for the side rule."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class Crossing:
    """One counted crossing of a line by a track."""

    line: str
    track_id: int
    class_id: int
    direction: Direction
    pts_s: float


@dataclass(slots=True)
class _TrackState:
    """Per-track crossing state of one line."""

    last_xy: Point | None = None
    # Sign of the last detected anchor that was off the line (0: none yet).
    last_sign: int = 0
    # Whether a step since that anchor touched the line segment.
    touched_since_sign: bool = False
    # Whether the latest change of sign went through the segment.
    flip_through_segment: bool = False
    # Side where the anchor last was at least the band width away (0: unknown).
    settled: int = 0
    pending: Direction | None = None
    counted: set[Direction] = field(default_factory=set)


def _sign(value: float) -> int:
    if value > 0:
        return 1
    if value < 0:
        return -1
    return 0


class LineCounter:
    """Counts tracks crossing one line segment, per direction.

    Args:
        name: line name; it appears in counts messages.
        start: point A of the line in stream pixels.
        end: point B of the line in stream pixels; see the module docstring
            for which side is `in`.
        classes: class ids that count; None counts every class.
        anchor: point of the box that stands for the object.
        hysteresis_px: how far, in stream pixels measured perpendicular to the
            line, an anchor must get on the new side before its crossing
            counts. Turning it up rejects larger box jitter at the line but
            misses objects that turn back close to the line; 0 counts on the
            first detected position past the line.
        frame_wh: stream resolution. When given, the band on a side is
            narrowed to half the distance from the line to the farthest frame
            corner on that side, so a line close to the frame edge can still
            count objects that leave the picture.
        max_tracks: bound on remembered tracks; see `forget`.

    Raises:
        GeometryError: for a zero-length line or an invalid name.
        ValueError: for a negative `hysteresis_px` or `max_tracks` < 1.
    """

    def __init__(
        self,
        name: str,
        start: Point,
        end: Point,
        *,
        classes: Iterable[int] | None = None,
        anchor: Anchor | str = Anchor.BOTTOM_CENTER,
        hysteresis_px: float = DEFAULT_HYSTERESIS_PX,
        frame_wh: tuple[int, int] | None = None,
        max_tracks: int = DEFAULT_MAX_TRACKS,
    ) -> None:
        check_name(name, "line")
        segment = Segment(start, end)
        if segment.length == 0:
            raise GeometryError(
                f"line {name!r} has zero length: start and end are both {start}; "
                "give two different points"
            )
        if not hysteresis_px >= 0:
            raise ValueError(
                f"line {name!r} hysteresis_px must be >= 0 pixels, got {hysteresis_px}"
            )
        if max_tracks < 1:
            raise ValueError(f"line {name!r} max_tracks must be >= 1, got {max_tracks}")
        self.name = name
        self.segment = segment
        self.classes = None if classes is None else frozenset(classes)
        self.anchor = parse_anchor(anchor, f"line {name!r}")
        self.hysteresis_px = float(hysteresis_px)
        self.band_px = self._band_per_side(frame_wh)
        self.max_tracks = max_tracks
        self._tracks: OrderedDict[int, _TrackState] = OrderedDict()
        self._evicted = 0

    def _band_per_side(self, frame_wh: tuple[int, int] | None) -> dict[int, float]:
        """Return the band width on the left (-1) and right (+1) side."""
        band = {-1: self.hysteresis_px, 1: self.hysteresis_px}
        if frame_wh is None:
            return band
        width, height = frame_wh
        corners = [Point(0, 0), Point(width, 0), Point(0, height), Point(width, height)]
        distances = [self.segment.signed_distance(corner) for corner in corners]
        for side in (-1, 1):
            reach = max([0.0] + [side * distance for distance in distances])
            if reach / 2.0 < band[side]:
                band[side] = reach / 2.0
                logger.info(
                    "line %r: band on the %s side narrowed from %.1f px to %.1f px "
                    "because the frame ends %.1f px from the line",
                    self.name,
                    "right" if side > 0 else "left",
                    self.hysteresis_px,
                    band[side],
                    reach,
                )
        return band

    @property
    def tracked_count(self) -> int:
        """Number of tracks whose state this line holds."""
        return len(self._tracks)

    def update(
        self, tracks: Sequence[Track], pts_s: float, *, detection_ran: bool = True
    ) -> list[Crossing]:
        """Advance the line by one frame and return the crossings it counted.

        Args:
            tracks: the tracker's tracks on this frame.
            pts_s: stream time of the frame in seconds.
            detection_ran: False when the detector skipped the frame; positions
                are then not used, only confirmations.
        """
        crossings: list[Crossing] = []
        for track in tracks:
            state = self._state_for(track.track_id)
            if track.confirmed and state.pending is not None:
                self._emit(track, state, state.pending, pts_s, crossings)
                state.pending = None
            if detection_ran and track.detected:
                direction = self._step(state, Point(*self.anchor.point(track.xyxy)))
                if direction is not None:
                    self._register(track, state, direction, pts_s, crossings)
        return crossings

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the state of ended tracks; a held crossing is dropped with it."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def _state_for(self, track_id: int) -> _TrackState:
        state = self._tracks.get(track_id)
        if state is not None:
            self._tracks.move_to_end(track_id)
            return state
        state = _TrackState()
        self._tracks[track_id] = state
        if len(self._tracks) > self.max_tracks:
            self._tracks.popitem(last=False)
            self._evicted += 1
            if self._evicted == 1 or self._evicted % 1000 == 0:
                logger.warning(
                    "line %r has state for more than %d tracks; dropped the least "
                    "recently seen (%d dropped so far). Check that the tracker "
                    "reports ended tracks",
                    self.name,
                    self.max_tracks,
                    self._evicted,
                )
        return state

    def _step(self, state: _TrackState, anchor: Point) -> Direction | None:
        """Move a track's anchor; return the direction when it settles across."""
        first_sighting = state.last_xy is None
        if state.last_xy is not None:
            step = Segment(state.last_xy, anchor)
            state.touched_since_sign |= step.intersects(self.segment)
        state.last_xy = anchor

        distance = self.segment.signed_distance(anchor)
        sign = _sign(distance)
        if sign == 0:
            return None
        if first_sighting and self._beside_segment(anchor):
            # The starting side of a track first seen inside the band; it only
            # counts after the anchor settles beyond the band on the other side.
            state.settled = sign
        if state.last_sign not in (0, sign):
            state.flip_through_segment = state.touched_since_sign
        state.last_sign = sign
        state.touched_since_sign = False

        if abs(distance) < self.band_px[sign]:
            return None
        direction = None
        if state.settled == -sign and state.flip_through_segment:
            direction = Direction.IN if sign > 0 else Direction.OUT
        state.settled = sign
        state.flip_through_segment = False
        return direction

    def _beside_segment(self, anchor: Point) -> bool:
        """Return True when `anchor` projects onto the segment, not past its ends."""
        start, end = self.segment.start, self.segment.end
        dx, dy = end.x - start.x, end.y - start.y
        t = ((anchor.x - start.x) * dx + (anchor.y - start.y) * dy) / (
            dx * dx + dy * dy
        )
        return 0.0 <= t <= 1.0

    def _register(
        self,
        track: Track,
        state: _TrackState,
        direction: Direction,
        pts_s: float,
        crossings: list[Crossing],
    ) -> None:
        if track.confirmed:
            self._emit(track, state, direction, pts_s, crossings)
        elif state.pending is None:
            state.pending = direction
        else:
            # Crossed and crossed back before confirmation: no net crossing.
            state.pending = None

    def _emit(
        self,
        track: Track,
        state: _TrackState,
        direction: Direction,
        pts_s: float,
        crossings: list[Crossing],
    ) -> None:
        if direction in state.counted:
            return
        if self.classes is not None and track.class_id not in self.classes:
            return
        state.counted.add(direction)
        crossing = Crossing(self.name, track.track_id, track.class_id, direction, pts_s)
        logger.debug(
            "line %r: track %d class %d crossed %s at %.3f s",
            self.name,
            track.track_id,
            track.class_id,
            direction,
            pts_s,
        )
        crossings.append(crossing)


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A configured line, in coordinates of the reference frame.

    Attributes:
        name: line name in counts messages.
        start: point A as drawn.
        end: point B as drawn; `in` is moving from the left-hand side of A->B
            to its right-hand side, as seen on screen.
        classes: class names that count; None means the detector's classes.
        anchor: point of the box that stands for the object.
        hysteresis_px: band width in stream pixels; see `LineCounter`.
    """

    name: str
    start: Point
    end: Point
    classes: tuple[str, ...] | None = None
    anchor: Anchor | str = Anchor.BOTTOM_CENTER
    hysteresis_px: float = DEFAULT_HYSTERESIS_PX

    def check(self, reference: ReferenceFrame) -> None:
        """Raise GeometryError when the line is invalid in `reference`."""
        check_name(self.name, "line")
        parse_anchor(self.anchor, f"line {self.name!r}")
        reference.check_inside(self.start, f"line {self.name!r} start")
        reference.check_inside(self.end, f"line {self.name!r} end")
        if self.start == self.end:
            raise GeometryError(
                f"line {self.name!r} has zero length: start and end are both "
                f"{self.start}; give two different points"
            )

    def build(
        self,
        reference: ReferenceFrame,
        resolution_wh: tuple[int, int],
        class_ids: Iterable[int],
    ) -> LineCounter:
        """Return a counter for a stream of `resolution_wh`."""
        return LineCounter(
            self.name,
            reference.to_stream(self.start, resolution_wh),
            reference.to_stream(self.end, resolution_wh),
            classes=class_ids,
            anchor=self.anchor,
            hysteresis_px=self.hysteresis_px,
            frame_wh=resolution_wh,
        )
