"""Per-interval aggregation of line crossings and zone occupancy.

Intervals are aligned to stream time: the first frame's `pts_s` starts the
first interval, and interval k covers [t0 + k*interval_s, t0 + (k+1)*interval_s).
UTC times of the boundaries come from the first frame's `captured_at` plus the
stream time elapsed, so drift between the stream clock and the wall clock
within one run is not corrected.

Occupancy is a step function of stream time: the value reported on a frame
lasts until the next frame. The mean is the time-weighted mean of that
function over the interval, the max is the largest value it takes there
(including the value carried in from the previous interval), and `current` is
its value at the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge.analytics.lines import Direction
from edge.analytics.speed_stats import SpeedStats
from edge.analytics.zones import ZoneTransition
from edge.messages import utc_iso

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
# A stream-time jump longer than this many intervals (one day of 60 s
# intervals) is treated as a clock jump: the empty intervals in between are
# not emitted one by one.
DEFAULT_MAX_SKIPPED_INTERVALS = 1440
# A frame within a microsecond before a boundary belongs after it, because
# frame times such as index / fps carry float rounding.
_TIME_TOLERANCE_S = 1e-6


@dataclass(frozen=True, slots=True)
class LineRow:
    """Crossings of one line by one class in one interval.

    `speed_in` and `speed_out` summarise the ground speeds of the crossings
    whose speed was known. Each is None when there was no such crossing.
    """

    line: str
    class_name: str
    in_count: int
    out_count: int
    speed_in: SpeedStats | None = None
    speed_out: SpeedStats | None = None

    def to_fields(self) -> dict[str, Any]:
        """Return the row of a counts message."""
        row: dict[str, Any] = {
            "line": self.line,
            "class": self.class_name,
            "in": self.in_count,
            "out": self.out_count,
        }
        if self.speed_in is not None:
            row["speed_in"] = self.speed_in.to_fields()
        if self.speed_out is not None:
            row["speed_out"] = self.speed_out.to_fields()
        return row


@dataclass(frozen=True, slots=True)
class ZoneRow:
    """Occupancy, entries and exits of one zone and class in one interval."""

    zone: str
    class_name: str
    current: int
    max: int
    mean: float
    entries: int
    exits: int


@dataclass(frozen=True, slots=True)
class CountsInterval:
    """Counts of one closed interval, ready for a counts message.

    Attributes:
        start: UTC start of the interval.
        end: UTC end; for the last, flushed interval, the last frame's time.
        frames: frames processed in the interval.
        detection_frames: frames on which the detector ran.
        lines: one row per configured line and class, zeros included.
        zones: one row per configured zone and class.
    """

    start: datetime
    end: datetime
    frames: int
    detection_frames: int
    lines: tuple[LineRow, ...]
    zones: tuple[ZoneRow, ...]

    def to_fields(self) -> dict[str, Any]:
        """Return the fields of a counts message other than the envelope."""
        return {
            "interval_start": utc_iso(self.start),
            "interval_end": utc_iso(self.end),
            "frames": self.frames,
            "detection_frames": self.detection_frames,
            "lines": [row.to_fields() for row in self.lines],
            "zones": [
                {
                    "zone": row.zone,
                    "class": row.class_name,
                    "current": row.current,
                    "max": row.max,
                    "mean": round(row.mean, 4),
                    "entries": row.entries,
                    "exits": row.exits,
                }
                for row in self.zones
            ],
        }


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """Per-frame analytics results, the input of `IntervalCounter`.

    Attributes:
        pts_s: stream time of the frame in seconds.
        captured_at: timezone-aware UTC time of the frame.
        detection_ran: whether the detector ran on the frame.
        crossings: (line, class name, direction) per counted crossing.
        crossing_speeds: (line, class name, direction, km/h) per counted
            crossing whose ground speed was known on this frame.
        zone_events: (zone, class name, transition) per entry or exit.
        occupancy: per zone, the occupancy per class name. A zone missing
            here keeps its last value; a class missing in a listed zone is 0.
    """

    pts_s: float
    captured_at: datetime
    detection_ran: bool = True
    crossings: Sequence[tuple[str, str, Direction]] = ()
    zone_events: Sequence[tuple[str, str, ZoneTransition]] = ()
    occupancy: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    crossing_speeds: Sequence[tuple[str, str, Direction, float]] = ()


@dataclass(slots=True)
class _LineTally:
    in_count: int = 0
    out_count: int = 0
    # Speeds of this interval's crossings, cleared when it closes.
    speeds_in: list[float] = field(default_factory=list)
    speeds_out: list[float] = field(default_factory=list)

    def row(self, line: str, class_name: str) -> LineRow:
        return LineRow(
            line,
            class_name,
            self.in_count,
            self.out_count,
            SpeedStats.from_samples(self.speeds_in),
            SpeedStats.from_samples(self.speeds_out),
        )

    def restart(self) -> None:
        self.in_count = 0
        self.out_count = 0
        self.speeds_in.clear()
        self.speeds_out.clear()


@dataclass(slots=True)
class _ZoneTally:
    """Running occupancy statistics of one zone and class."""

    since_s: float
    value: int = 0
    integral: float = 0.0
    max: int = 0
    entries: int = 0
    exits: int = 0

    def hold_until(self, pts_s: float) -> None:
        # A frame within the boundary tolerance may lie just before since_s.
        if pts_s <= self.since_s:
            return
        self.integral += self.value * (pts_s - self.since_s)
        self.since_s = pts_s

    def set(self, pts_s: float, value: int) -> None:
        self.hold_until(pts_s)
        self.value = value
        self.max = max(self.max, value)

    def row(self, zone: str, class_name: str, start_s: float, end_s: float) -> ZoneRow:
        self.hold_until(end_s)
        duration = end_s - start_s
        mean = self.integral / duration if duration > 0 else float(self.value)
        return ZoneRow(
            zone, class_name, self.value, self.max, mean, self.entries, self.exits
        )

    def restart(self, start_s: float) -> None:
        self.since_s = start_s
        self.integral = 0.0
        self.max = self.value
        self.entries = 0
        self.exits = 0


class IntervalCounter:
    """Accumulates counts per interval of stream time and emits closed intervals.

    Args:
        lines: class names per line name; one row each, zeros included.
        zones: class names per zone name.
        interval_s: interval length in seconds of stream time.
        max_skipped_intervals: a gap between frames longer than this many
            intervals closes the current interval and restarts the grid at the
            new frame's interval, without emitting the empty ones between.

    Raises:
        ValueError: when `interval_s` is not positive.
    """

    def __init__(
        self,
        lines: Mapping[str, Sequence[str]],
        zones: Mapping[str, Sequence[str]],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_skipped_intervals: int = DEFAULT_MAX_SKIPPED_INTERVALS,
    ) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(
                f"counts interval_s must be a positive number of seconds, got "
                f"{interval_s}"
            )
        self.interval_s = float(interval_s)
        self.max_skipped_intervals = max_skipped_intervals
        self._line_keys: list[tuple[str, str]] = []
        self._zone_keys: list[tuple[str, str]] = []
        self._retiring_lines: list[tuple[str, str]] = []
        self._retiring_zones: list[tuple[str, str]] = []
        self._line_tallies: dict[tuple[str, str], _LineTally] = {}
        self._zone_tallies: dict[tuple[str, str], _ZoneTally] = {}
        self._origin_s: float | None = None
        self._origin_utc: datetime | None = None
        self._index = 0
        self._last_s = 0.0
        self._frames = 0
        self._detection_frames = 0
        self._backwards = 0
        self.set_rows(lines, zones)

    @property
    def interval_start_s(self) -> float | None:
        """Stream time where the current interval started; None before a frame."""
        if self._origin_s is None:
            return None
        return self._origin_s + self._index * self.interval_s

    def set_rows(
        self, lines: Mapping[str, Sequence[str]], zones: Mapping[str, Sequence[str]]
    ) -> None:
        """Change the configured rows, keeping the counts of the current interval.

        Rows that disappear stay in the current interval with what they have
        counted so far and are dropped at its end. A removed zone's occupancy
        reads 0 from the last frame on, because nothing monitors it anymore.
        """
        line_keys = [(line, name) for line, names in lines.items() for name in names]
        zone_keys = [(zone, name) for zone, names in zones.items() for name in names]
        self._retiring_lines = [
            key for key in self._line_tallies if key not in set(line_keys)
        ]
        self._retiring_zones = [
            key for key in self._zone_tallies if key not in set(zone_keys)
        ]
        for key in line_keys:
            self._line_tallies.setdefault(key, _LineTally())
        for key in zone_keys:
            self._zone_tallies.setdefault(key, _ZoneTally(since_s=self._last_s))
        for key in self._retiring_zones:
            self._zone_tallies[key].set(self._last_s, 0)
        self._line_keys = line_keys
        self._zone_keys = zone_keys

    def add_frame(self, counts: FrameCounts) -> list[CountsInterval]:
        """Add one frame; return the intervals that ended before it, oldest first."""
        if counts.captured_at.tzinfo is None:
            raise ValueError(
                f"frame captured_at {counts.captured_at!r} is naive; pass a "
                "timezone-aware UTC time"
            )
        pts_s = self._start_or_clamp(counts)
        closed = self._close_until(pts_s)

        self._frames += 1
        self._detection_frames += int(counts.detection_ran)
        for line, class_name, direction in counts.crossings:
            tally = self._line_tallies.setdefault((line, class_name), _LineTally())
            if direction is Direction.IN:
                tally.in_count += 1
            else:
                tally.out_count += 1
        for line, class_name, direction, speed_kmh in counts.crossing_speeds:
            tally = self._line_tallies.setdefault((line, class_name), _LineTally())
            if direction is Direction.IN:
                tally.speeds_in.append(speed_kmh)
            else:
                tally.speeds_out.append(speed_kmh)
        for zone, class_name, transition in counts.zone_events:
            zone_tally = self._zone_tally((zone, class_name), pts_s)
            if transition is ZoneTransition.ENTER:
                zone_tally.entries += 1
            else:
                zone_tally.exits += 1
        for zone, class_name in self._zone_keys:
            per_class = counts.occupancy.get(zone)
            if per_class is not None:
                value = per_class.get(class_name, 0)
                self._zone_tally((zone, class_name), pts_s).set(pts_s, value)
        self._last_s = pts_s
        return closed

    def flush(self) -> CountsInterval | None:
        """Close the current, partial interval at the last frame's time.

        Returns None when no frame was added since the last boundary. The
        counter then starts over: the next frame begins a new grid.
        """
        if self._origin_s is None or self._frames == 0:
            return None
        interval = self._close(self._last_s)
        self._origin_s = None
        self._origin_utc = None
        self._index = 0
        return interval

    def _zone_tally(self, key: tuple[str, str], pts_s: float) -> _ZoneTally:
        tally = self._zone_tallies.get(key)
        if tally is None:
            # An event for a row not configured: keep it rather than lose it.
            logger.debug("zone row %r not configured; adding it", key)
            tally = _ZoneTally(since_s=pts_s)
            self._zone_tallies[key] = tally
            self._zone_keys.append(key)
        return tally

    def _start_or_clamp(self, counts: FrameCounts) -> float:
        pts_s = counts.pts_s
        if self._origin_s is None:
            self._origin_s = pts_s
            self._origin_utc = counts.captured_at
            self._index = 0
            self._last_s = pts_s
            for tally in self._zone_tallies.values():
                tally.since_s = pts_s
            return pts_s
        if pts_s < self._last_s:
            self._backwards += 1
            if self._backwards == 1 or self._backwards % 1000 == 0:
                logger.warning(
                    "frame stream time went backwards from %.3f s to %.3f s; "
                    "counting it at %.3f s (%d such frames so far)",
                    self._last_s,
                    pts_s,
                    self._last_s,
                    self._backwards,
                )
            return self._last_s
        return pts_s

    def _close_until(self, pts_s: float) -> list[CountsInterval]:
        assert self._origin_s is not None  # set by _start_or_clamp
        closed: list[CountsInterval] = []
        elapsed_s = pts_s - self._origin_s + _TIME_TOLERANCE_S
        boundaries = math.floor(elapsed_s / self.interval_s) - self._index
        if boundaries <= 0:
            return closed
        if boundaries > self.max_skipped_intervals:
            closed.append(self._close(self._end_s()))
            logger.warning(
                "stream time jumped %.1f s ahead (%d intervals of %.0f s); "
                "continuing without emitting the empty intervals",
                pts_s - self._last_s,
                boundaries,
                self.interval_s,
            )
            self._index += boundaries - 1
            self._restart_tallies()
            return closed
        for _ in range(boundaries):
            closed.append(self._close(self._end_s()))
        return closed

    def _end_s(self) -> float:
        assert self._origin_s is not None
        return self._origin_s + (self._index + 1) * self.interval_s

    def _utc(self, pts_s: float) -> datetime:
        assert self._origin_s is not None
        assert self._origin_utc is not None
        return self._origin_utc + timedelta(seconds=pts_s - self._origin_s)

    def _close(self, end_s: float) -> CountsInterval:
        assert self._origin_s is not None
        start_s = self._origin_s + self._index * self.interval_s
        lines = tuple(
            tally.row(line, name) for (line, name), tally in self._line_rows()
        )
        zones = tuple(
            self._zone_tallies[key].row(key[0], key[1], start_s, end_s)
            for key in self._zone_keys + self._retiring_zones
        )
        interval = CountsInterval(
            start=self._utc(start_s),
            end=self._utc(end_s),
            frames=self._frames,
            detection_frames=self._detection_frames,
            lines=lines,
            zones=zones,
        )
        self._index += 1
        self._restart_tallies()
        return interval

    def _line_rows(self) -> list[tuple[tuple[str, str], _LineTally]]:
        keys = self._line_keys + self._retiring_lines
        extra = [key for key in self._line_tallies if key not in set(keys)]
        return [(key, self._line_tallies[key]) for key in keys + extra]

    def _restart_tallies(self) -> None:
        for key in self._retiring_lines:
            self._line_tallies.pop(key, None)
        for key in self._retiring_zones:
            self._zone_tallies.pop(key, None)
        self._retiring_lines = []
        self._retiring_zones = []
        start_s = self.interval_start_s
        for line_tally in self._line_tallies.values():
            line_tally.restart()
        for zone_tally in self._zone_tallies.values():
            zone_tally.restart(self._last_s if start_s is None else start_s)
        self._frames = 0
        self._detection_frames = 0
