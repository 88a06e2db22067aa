"""Line crossings, zone occupancy and per-interval counts of a node.

`Analytics` is the entry point: it takes the configured lines and zones,
scales them to the stream, feeds every `TrackedFrame` to each `LineCounter`
and `ZoneMonitor`, and aggregates the results into `CountsInterval` values,
with the statistics of the crossing speeds when the frames carry speeds.
The rules for sides, hysteresis and debounce are in the docstrings of
`edge.analytics.lines` and `edge.analytics.zones`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from edge.analytics.geometry import (
    GeometryError,
    Point,
    Polygon,
    ReferenceFrame,
    Segment,
    require_reference,
)
from edge.analytics.intervals import (
    DEFAULT_INTERVAL_S,
    CountsInterval,
    FrameCounts,
    IntervalCounter,
    LineRow,
    ZoneRow,
)
from edge.analytics.lines import Crossing, Direction, LineCounter, LineSpec
from edge.analytics.speed_stats import SpeedStats
from edge.analytics.zones import ZoneEvent, ZoneMonitor, ZoneSpec, ZoneTransition
from edge.types import TrackedFrame

__all__ = [
    "Analytics",
    "CountsInterval",
    "Crossing",
    "Direction",
    "FrameCounts",
    "GeometryError",
    "IntervalCounter",
    "LineCounter",
    "LineRow",
    "LineSpec",
    "Point",
    "Polygon",
    "ReferenceFrame",
    "Segment",
    "SpeedStats",
    "ZoneEvent",
    "ZoneMonitor",
    "ZoneRow",
    "ZoneSpec",
    "ZoneTransition",
]

logger = logging.getLogger(__name__)


class Analytics:
    """Counts line crossings and zone occupancy and emits per-interval counts.

    Args:
        lines: configured lines, in coordinates of `reference`.
        zones: configured zones, in coordinates of `reference`.
        reference: the frame the geometry was drawn on; None when
            geometry.reference_resolution is missing, which is an error as
            soon as there is a line or a zone.
        class_names: the model's class names; index i names class id i.
        detector_classes: class names the detector reports. They are the
            rows of a line or zone configured without classes; None means
            all of `class_names`.
        interval_s: length of a counts interval in seconds of stream time.

    Raises:
        GeometryError: for missing reference, invalid geometry, duplicate
            names or unknown class names.
    """

    def __init__(
        self,
        lines: Sequence[LineSpec],
        zones: Sequence[ZoneSpec],
        *,
        reference: ReferenceFrame | None,
        class_names: Sequence[str],
        detector_classes: Sequence[str] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.class_names = list(class_names)
        self._class_ids: dict[str, int] = {}
        for class_id, name in enumerate(self.class_names):
            self._class_ids.setdefault(name, class_id)
        self.detector_classes = self._resolve_classes(
            None if detector_classes is None else tuple(detector_classes),
            "detector classes",
            self.class_names,
        )
        self.reference = reference
        self._check(lines, zones)
        self._line_specs = list(lines)
        self._zone_specs = list(zones)
        self._lines: list[LineCounter] = []
        self._zones: list[ZoneMonitor] = []
        self._resolution_wh: tuple[int, int] | None = None
        self._intervals = IntervalCounter(
            self._line_rows(), self._zone_rows(), interval_s=interval_s
        )

    @property
    def resolution_wh(self) -> tuple[int, int] | None:
        """Stream resolution the geometry is scaled to; None before a frame."""
        return self._resolution_wh

    def update(self, tracked: TrackedFrame) -> list[CountsInterval]:
        """Count one frame; return the intervals that ended before it."""
        frame = tracked.frame
        if frame.resolution_wh != self._resolution_wh:
            self._rescale(frame.resolution_wh)
        # Ended tracks are gone from this frame, so they leave the occupancy now.
        self.forget(tracked.ended_track_ids)
        ran = frame.detection_ran
        crossings: list[tuple[str, str, Direction]] = []
        crossing_speeds: list[tuple[str, str, Direction, float]] = []
        for counter in self._lines:
            for c in counter.update(tracked.tracks, frame.pts_s, detection_ran=ran):
                crossing = (c.line, self.class_names[c.class_id], c.direction)
                crossings.append(crossing)
                speed_kmh = tracked.speeds_kmh.get(c.track_id)
                if speed_kmh is not None:
                    crossing_speeds.append((*crossing, speed_kmh))
        events = [
            (e.zone, self.class_names[e.class_id], e.transition)
            for monitor in self._zones
            for e in monitor.update(tracked.tracks, frame.pts_s, detection_ran=ran)
        ]
        occupancy = {
            monitor.name: {
                self.class_names[class_id]: count
                for class_id, count in monitor.occupancy().items()
            }
            for monitor in self._zones
        }
        return self._intervals.add_frame(
            FrameCounts(
                frame.pts_s,
                frame.captured_at,
                ran,
                crossings,
                events,
                occupancy,
                crossing_speeds,
            )
        )

    def flush(self) -> CountsInterval | None:
        """Close the last, partial interval; None when it has no frame."""
        return self._intervals.flush()

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the per-track state of ended tracks in every line and zone."""
        ids = list(track_ids)
        if not ids:
            return
        for counter in self._lines:
            counter.forget(ids)
        for monitor in self._zones:
            monitor.forget(ids)

    def replace_geometry(
        self, lines: Sequence[LineSpec], zones: Sequence[ZoneSpec]
    ) -> None:
        """Apply a live configuration change of lines and zones.

        The new geometry is checked first; on error nothing changes. Counts of
        the current interval are kept. A line or zone whose spec is unchanged
        keeps its per-track state; a changed or removed one loses it.

        Raises:
            GeometryError: as for the constructor.
        """
        self._check(lines, zones)
        old_lines = {counter.name: counter for counter in self._lines}
        old_zones = {monitor.name: monitor for monitor in self._zones}
        old_line_specs = {spec.name: spec for spec in self._line_specs}
        old_zone_specs = {spec.name: spec for spec in self._zone_specs}
        self._line_specs = list(lines)
        self._zone_specs = list(zones)
        if self._resolution_wh is not None:
            resolution = self._resolution_wh
            self._lines = [
                old_lines[spec.name]
                if old_line_specs.get(spec.name) == spec
                else self._build_line(spec, resolution)
                for spec in lines
            ]
            self._zones = [
                old_zones[spec.name]
                if old_zone_specs.get(spec.name) == spec
                else self._build_zone(spec, resolution)
                for spec in zones
            ]
        self._intervals.set_rows(self._line_rows(), self._zone_rows())
        logger.info(
            "geometry replaced: %d lines (%s), %d zones (%s)",
            len(lines),
            ", ".join(spec.name for spec in lines) or "none",
            len(zones),
            ", ".join(spec.name for spec in zones) or "none",
        )

    def _check(self, lines: Sequence[LineSpec], zones: Sequence[ZoneSpec]) -> None:
        owners = [f"line {s.name!r}" for s in lines] + [
            f"zone {s.name!r}" for s in zones
        ]
        reference = require_reference(self.reference, owners)
        if reference is None:
            return
        for kind, names in (
            ("line", [s.name for s in lines]),
            ("zone", [s.name for s in zones]),
        ):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise GeometryError(
                    f"{kind} names must be unique; {', '.join(map(repr, duplicates))} "
                    "appear more than once"
                )
        for line in lines:
            line.check(reference)
            self._resolve_classes(
                line.classes, f"line {line.name!r} classes", self.detector_classes
            )
        for zone in zones:
            zone.check(reference)
            self._resolve_classes(
                zone.classes, f"zone {zone.name!r} classes", self.detector_classes
            )

    def _resolve_classes(
        self, classes: tuple[str, ...] | None, owner: str, allowed: Sequence[str]
    ) -> list[str]:
        if classes is None:
            return list(allowed)
        if not classes:
            raise GeometryError(
                f"{owner} is an empty list; leave it out to count every detector "
                "class, or name at least one class"
            )
        unknown = [name for name in classes if name not in allowed]
        if unknown:
            raise GeometryError(
                f"{owner} names unknown classes {unknown}; expected names from: "
                f"{', '.join(allowed)}"
            )
        return list(dict.fromkeys(classes))

    def _line_rows(self) -> dict[str, list[str]]:
        return {
            spec.name: self._resolve_classes(
                spec.classes, spec.name, self.detector_classes
            )
            for spec in self._line_specs
        }

    def _zone_rows(self) -> dict[str, list[str]]:
        return {
            spec.name: self._resolve_classes(
                spec.classes, spec.name, self.detector_classes
            )
            for spec in self._zone_specs
        }

    def _ids(self, names: Sequence[str]) -> list[int]:
        return [self._class_ids[name] for name in names]

    def _build_line(
        self, spec: LineSpec, resolution_wh: tuple[int, int]
    ) -> LineCounter:
        assert self.reference is not None  # checked by _check when lines exist
        names = self._resolve_classes(spec.classes, spec.name, self.detector_classes)
        return spec.build(self.reference, resolution_wh, self._ids(names))

    def _build_zone(
        self, spec: ZoneSpec, resolution_wh: tuple[int, int]
    ) -> ZoneMonitor:
        assert self.reference is not None
        names = self._resolve_classes(spec.classes, spec.name, self.detector_classes)
        return spec.build(self.reference, resolution_wh, self._ids(names))

    def _rescale(self, resolution_wh: tuple[int, int]) -> None:
        if self._resolution_wh is not None:
            logger.warning(
                "stream resolution changed from %dx%d to %dx%d; rescaling lines and "
                "zones, per-track state is reset",
                *self._resolution_wh,
                *resolution_wh,
            )
        else:
            logger.info(
                "scaling %d lines and %d zones from %s to %dx%d",
                len(self._line_specs),
                len(self._zone_specs),
                self.reference,
                *resolution_wh,
            )
        self._resolution_wh = resolution_wh
        self._lines = [
            self._build_line(spec, resolution_wh) for spec in self._line_specs
        ]
        self._zones = [
            self._build_zone(spec, resolution_wh) for spec in self._zone_specs
        ]
