"""Zone occupancy, entries and exits of tracked objects, with debounce in seconds.

A track is in a zone when its anchor is inside the zone's polygon; a point on
the boundary is inside. The raw per-frame test is debounced in stream time:
the track's zone state changes only after the raw test has disagreed with it
on every detected frame for `enter_debounce_s` (to enter) or
`exit_debounce_s` (to leave). Bounding-box jitter across the boundary
therefore neither flickers the occupancy nor adds entries and exits.

Rules:

- Occupancy counts confirmed tracks that are in the zone, per class (the
  class the track has now). Tracks that are not confirmed are followed from
  their first sighting but are not counted.
- An entry or an exit is counted once per debounced change of state. A track
  first seen inside the zone starts inside without an entry, and a track that
  ends inside leaves the occupancy without an exit, because neither crossed
  the boundary while being watched.
- A change that happens while the track is not confirmed is held and counted
  when the track is confirmed, unless it was undone before that.
- Frames on which detection did not run, and coasting tracks
  (`Track.detected` is False), leave every state as it was: a zone is never
  read as empty because the detector skipped a frame.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edge.analytics.geometry import (
    GeometryError,
    Point,
    Polygon,
    ReferenceFrame,
    anchors_xy,
    check_name,
    parse_anchor,
)
from edge.types import Anchor, Track

logger = logging.getLogger(__name__)

DEFAULT_ENTER_DEBOUNCE_S = 0.5
DEFAULT_EXIT_DEBOUNCE_S = 1.0
# Same role as in lines.py: protects against a tracker that never reports
# ended tracks.
DEFAULT_MAX_TRACKS = 4096
# Frame times such as index / fps carry float rounding (0.7 - 0.4 < 0.3), so a
# debounce that is met to the microsecond counts as met.
_TIME_TOLERANCE_S = 1e-6


class ZoneTransition(StrEnum):
    """Kind of a debounced change of a track's zone state."""

    ENTER = "enter"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class ZoneEvent:
    """One counted entry or exit of a track."""

    zone: str
    track_id: int
    class_id: int
    transition: ZoneTransition
    pts_s: float


@dataclass(slots=True)
class _Presence:
    """Per-track zone state of one zone."""

    inside: bool
    class_id: int
    confirmed: bool = False
    # Stream time of the first detected frame that disagreed with `inside`.
    disagree_since_s: float | None = None
    pending: ZoneTransition | None = None


class ZoneMonitor:
    """Tracks which objects are in one polygon zone.

    Args:
        name: zone name; it appears in counts messages.
        polygon: the zone in stream pixels.
        classes: class ids that count; None counts every class.
        anchor: point of the box that stands for the object.
        enter_debounce_s: seconds of stream time the anchor must stay inside
            before the track enters. Turning it up ignores objects that only
            brush the zone; 0 enters on the first detected frame inside.
        exit_debounce_s: seconds the anchor must stay outside before the
            track leaves. Turning it up hides short excursions and box
            jitter on the boundary, but delays exits.
        max_tracks: bound on remembered tracks; see `forget`.

    Raises:
        GeometryError: for an invalid name.
        ValueError: for a negative debounce or `max_tracks` < 1.
    """

    def __init__(
        self,
        name: str,
        polygon: Polygon,
        *,
        classes: Iterable[int] | None = None,
        anchor: Anchor | str = Anchor.BOTTOM_CENTER,
        enter_debounce_s: float = DEFAULT_ENTER_DEBOUNCE_S,
        exit_debounce_s: float = DEFAULT_EXIT_DEBOUNCE_S,
        max_tracks: int = DEFAULT_MAX_TRACKS,
    ) -> None:
        check_name(name, "zone")
        for field_name, value in (
            ("enter_debounce_s", enter_debounce_s),
            ("exit_debounce_s", exit_debounce_s),
        ):
            if not value >= 0:
                raise ValueError(
                    f"zone {name!r} {field_name} must be >= 0 seconds, got {value}"
                )
        if max_tracks < 1:
            raise ValueError(f"zone {name!r} max_tracks must be >= 1, got {max_tracks}")
        self.name = name
        self.polygon = polygon
        self.classes = None if classes is None else frozenset(classes)
        self.anchor = parse_anchor(anchor, f"zone {name!r}")
        self.enter_debounce_s = float(enter_debounce_s)
        self.exit_debounce_s = float(exit_debounce_s)
        self.max_tracks = max_tracks
        self._tracks: OrderedDict[int, _Presence] = OrderedDict()
        self._evicted = 0

    @property
    def tracked_count(self) -> int:
        """Number of tracks whose state this zone holds."""
        return len(self._tracks)

    def update(
        self, tracks: Sequence[Track], pts_s: float, *, detection_ran: bool = True
    ) -> list[ZoneEvent]:
        """Advance the zone by one frame and return the entries and exits counted.

        Args:
            tracks: the tracker's tracks on this frame.
            pts_s: stream time of the frame in seconds.
            detection_ran: False when the detector skipped the frame; states
                are then kept as they were.
        """
        observed = [t for t in tracks if detection_ran and t.detected]
        inside = self.polygon.contains_xy(
            anchors_xy([t.xyxy for t in observed], self.anchor)
        )
        raw_inside = {
            t.track_id: bool(flag) for t, flag in zip(observed, inside, strict=True)
        }

        events: list[ZoneEvent] = []
        for track in tracks:
            state = self._state_for(track, raw_inside)
            if state is None:
                continue
            state.class_id = track.class_id
            if track.confirmed and not state.confirmed:
                state.confirmed = True
                if state.pending is not None:
                    self._emit(track, state.pending, pts_s, events)
                    state.pending = None
            if track.track_id in raw_inside:
                self._observe(track, state, raw_inside[track.track_id], pts_s, events)
        return events

    def occupancy(self) -> dict[int, int]:
        """Return the number of confirmed tracks in the zone per class id."""
        counts: dict[int, int] = {}
        for state in self._tracks.values():
            if not (state.inside and state.confirmed):
                continue
            if self.classes is not None and state.class_id not in self.classes:
                continue
            counts[state.class_id] = counts.get(state.class_id, 0) + 1
        return counts

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the state of ended tracks; they leave the occupancy."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def _state_for(self, track: Track, raw_inside: dict[int, bool]) -> _Presence | None:
        state = self._tracks.get(track.track_id)
        if state is not None:
            self._tracks.move_to_end(track.track_id)
            return state
        if track.track_id not in raw_inside:
            # A track never detected has no observed position to start from.
            return None
        state = _Presence(inside=raw_inside[track.track_id], class_id=track.class_id)
        self._tracks[track.track_id] = state
        if len(self._tracks) > self.max_tracks:
            self._tracks.popitem(last=False)
            self._evicted += 1
            if self._evicted == 1 or self._evicted % 1000 == 0:
                logger.warning(
                    "zone %r has state for more than %d tracks; dropped the least "
                    "recently seen (%d dropped so far). Check that the tracker "
                    "reports ended tracks",
                    self.name,
                    self.max_tracks,
                    self._evicted,
                )
        return state

    def _observe(
        self,
        track: Track,
        state: _Presence,
        raw: bool,
        pts_s: float,
        events: list[ZoneEvent],
    ) -> None:
        if raw == state.inside:
            state.disagree_since_s = None
            return
        if state.disagree_since_s is None:
            state.disagree_since_s = pts_s
        debounce_s = self.enter_debounce_s if raw else self.exit_debounce_s
        if pts_s - state.disagree_since_s + _TIME_TOLERANCE_S < debounce_s:
            return
        state.inside = raw
        state.disagree_since_s = None
        transition = ZoneTransition.ENTER if raw else ZoneTransition.EXIT
        if state.confirmed:
            self._emit(track, transition, pts_s, events)
        elif state.pending is None:
            state.pending = transition
        else:
            state.pending = None

    def _emit(
        self,
        track: Track,
        transition: ZoneTransition,
        pts_s: float,
        events: list[ZoneEvent],
    ) -> None:
        if self.classes is not None and track.class_id not in self.classes:
            return
        logger.debug(
            "zone %r: track %d class %d %s at %.3f s",
            self.name,
            track.track_id,
            track.class_id,
            transition,
            pts_s,
        )
        events.append(
            ZoneEvent(self.name, track.track_id, track.class_id, transition, pts_s)
        )


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A configured zone, in coordinates of the reference frame.

    Attributes:
        name: zone name in counts messages.
        points: polygon vertices as drawn, in order around the outline.
        classes: class names that count; None means the detector's classes.
        anchor: point of the box that stands for the object.
        enter_debounce_s: see `ZoneMonitor`.
        exit_debounce_s: see `ZoneMonitor`.
    """

    name: str
    points: tuple[Point, ...]
    classes: tuple[str, ...] | None = None
    anchor: Anchor | str = Anchor.BOTTOM_CENTER
    enter_debounce_s: float = DEFAULT_ENTER_DEBOUNCE_S
    exit_debounce_s: float = DEFAULT_EXIT_DEBOUNCE_S

    def check(self, reference: ReferenceFrame) -> None:
        """Raise GeometryError when the zone is invalid in `reference`."""
        check_name(self.name, "zone")
        parse_anchor(self.anchor, f"zone {self.name!r}")
        for index, point in enumerate(self.points):
            reference.check_inside(point, f"zone {self.name!r} point {index}")
        Polygon(self.points, name=f"zone {self.name!r}")

    def build(
        self,
        reference: ReferenceFrame,
        resolution_wh: tuple[int, int],
        class_ids: Iterable[int],
    ) -> ZoneMonitor:
        """Return a monitor for a stream of `resolution_wh`."""
        scaled = tuple(reference.to_stream(p, resolution_wh) for p in self.points)
        try:
            polygon = Polygon(scaled, name=f"zone {self.name!r}")
        except GeometryError as error:
            raise GeometryError(
                f"{error} (after scaling {reference} to {resolution_wh[0]}x"
                f"{resolution_wh[1]})"
            ) from error
        return ZoneMonitor(
            self.name,
            polygon,
            classes=class_ids,
            anchor=self.anchor,
            enter_debounce_s=self.enter_debounce_s,
            exit_debounce_s=self.exit_debounce_s,
        )
