"""The configured geometry of a node, turned into analytics specs.

Lines, zones and masks are drawn on a reference frame (pixels of a declared
resolution, or normalised 0..1). `Scene` keeps them in those coordinates for
analytics, which scales them itself, and scales masks and the ground plane
to the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.analytics import GeometryError, LineSpec, Point, ReferenceFrame, ZoneSpec
from edge.config import NodeConfig
from edge.ground import GroundError, GroundPlane
from edge.lens import LensError


@dataclass(frozen=True, slots=True)
class Scene:
    """Lines, zones, privacy masks and ground plane of one node for one stream.

    Attributes:
        reference: the frame lines and zones were drawn on.
        lines: counting lines in reference coordinates.
        zones: zones in reference coordinates.
        masks: privacy masks in stream pixels.
        ground: pixel-to-metre mapping at the stream's resolution; None
            without a `ground` section.
    """

    reference: ReferenceFrame | None
    lines: tuple[LineSpec, ...]
    zones: tuple[ZoneSpec, ...]
    masks: tuple[tuple[tuple[float, float], ...], ...]
    ground: GroundPlane | None = None

    @classmethod
    def from_config(cls, config: NodeConfig, resolution_wh: tuple[int, int]) -> Scene:
        """Build the scene for a stream of `resolution_wh`.

        Raises:
            GeometryError: a point outside the reference frame, a degenerate
                line or polygon, pixel geometry without a reference, or a
                ground plane that cannot be used: it needs a missing lens
                section, does not match its points, or was calibrated at
                another aspect ratio than the stream's.
        """
        reference = _reference(config, resolution_wh)
        anchor = config.geometry.anchor
        lines = tuple(
            LineSpec(
                name=line.name,
                start=Point(*line.points[0]),
                end=Point(*line.points[1]),
                classes=tuple(line.classes) if line.classes else None,
                anchor=anchor,
                hysteresis_px=line.hysteresis_px,
            )
            for line in config.lines
        )
        zones = tuple(
            ZoneSpec(
                name=zone.name,
                points=tuple(Point(*point) for point in zone.polygon),
                classes=tuple(zone.classes) if zone.classes else None,
                anchor=anchor,
                enter_debounce_s=zone.enter_debounce_s,
                exit_debounce_s=zone.exit_debounce_s,
            )
            for zone in config.zones
        )
        masks = []
        for mask in config.masks:
            if reference is None:
                raise GeometryError(
                    f"mask {mask.name!r} is given in pixels but "
                    "geometry.reference_resolution is missing; set it to the "
                    "resolution the mask was drawn on"
                )
            points = []
            for index, (x, y) in enumerate(mask.polygon):
                point = Point(x, y)
                reference.check_inside(point, f"mask {mask.name!r} point {index}")
                scaled = reference.to_stream(point, resolution_wh)
                points.append((scaled.x, scaled.y))
            masks.append(tuple(points))
        return cls(
            reference=reference,
            lines=lines,
            zones=zones,
            masks=tuple(masks),
            ground=_ground(config, resolution_wh),
        )


def _ground(config: NodeConfig, resolution_wh: tuple[int, int]) -> GroundPlane | None:
    if config.ground is None:
        return None
    try:
        plane = GroundPlane.from_config(config.ground, config.lens)
        return plane.for_stream(resolution_wh)
    except (GroundError, LensError) as error:
        raise GeometryError(str(error)) from error


def _reference(
    config: NodeConfig, resolution_wh: tuple[int, int]
) -> ReferenceFrame | None:
    geometry = config.geometry
    if geometry.units == "normalized":
        return ReferenceFrame.unit()
    if geometry.reference_resolution == "source":
        return ReferenceFrame.pixels(resolution_wh)
    if geometry.reference_resolution is None:
        return None
    return ReferenceFrame.pixels(geometry.reference_resolution)
