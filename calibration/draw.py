"""Lines, zones and masks drawn on a snapshot, checked and written to the config.

Points are given in pixels of the snapshot, as a technician reads them off
the picture (or clicks them in `calibration.editor`). They are stored either
in those pixels, with `geometry.reference_resolution` set to the snapshot's
resolution, or as fractions 0..1 of the picture (`--normalized`). Lines,
zones and masks already in the config are converted to the same frame, so a
config drawn on a 768x576 snapshot and edited on a 1280x720 one stays right.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ruamel.yaml.comments import CommentedMap

from calibration.config_edit import ConfigDocument, flow_list, flow_points
from calibration.errors import CalibrationError
from edge.analytics import GeometryError, LineSpec, Point, Polygon, ReferenceFrame
from edge.analytics.geometry import check_name
from edge.analytics.zones import ZoneSpec

logger = logging.getLogger(__name__)

# Digits kept when writing coordinates: a tenth of a pixel, or 1e-5 of the
# picture when normalised (a hundredth of a pixel at 1920 px).
_PIXEL_DIGITS = 1
_NORMALISED_DIGITS = 5


class DrawError(CalibrationError):
    """A line, zone or mask that cannot be used; the message names it."""


class ItemKind(StrEnum):
    """Kind of a drawn item."""

    LINE = "line"
    ZONE = "zone"
    MASK = "mask"

    @property
    def config_key(self) -> str:
        """The config list the item goes into."""
        return f"{self.value}s"

    @property
    def points_key(self) -> str:
        """The key of the item's points in the config."""
        return "points" if self is ItemKind.LINE else "polygon"

    @property
    def min_points(self) -> int:
        """Minimum number of points of a valid item."""
        return 2 if self is ItemKind.LINE else 3


@dataclass(frozen=True, slots=True)
class DrawnItem:
    """A line, zone or mask in snapshot pixels.

    Attributes:
        kind: line, zone or mask.
        name: name in the config and in counts messages.
        points: (x, y) pixels; a line has exactly two, from A to B.
    """

    kind: ItemKind
    name: str
    points: tuple[tuple[float, float], ...]


def parse_item(kind: ItemKind, text: str) -> DrawnItem:
    """Parse `NAME:X1,Y1,X2,Y2,...` as given to --line, --zone or --mask.

    Raises:
        DrawError: naming the option and what is wrong with the text.
    """
    option = f"--{kind.value}"
    name, separator, numbers = text.rpartition(":")
    if not separator or not name.strip():
        raise DrawError(
            f"{option} {text!r} has no name; write {option} NAME:X1,Y1,X2,Y2,..."
        )
    try:
        values = [float(value) for value in numbers.split(",")]
    except ValueError:
        raise DrawError(
            f"{option} {text!r}: {numbers!r} is not a comma-separated list of numbers"
        ) from None
    if len(values) % 2:
        raise DrawError(f"{option} {text!r} has {len(values)} numbers; give x,y pairs")
    points = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2))
    if kind is ItemKind.LINE and len(points) != 2:
        raise DrawError(
            f"{option} {text!r} has {len(points)} points; a line has exactly 2, "
            "start and end"
        )
    if len(points) < kind.min_points:
        raise DrawError(
            f"{option} {text!r} has {len(points)} points; a {kind.value} needs at "
            f"least {kind.min_points}"
        )
    return DrawnItem(kind=kind, name=name.strip(), points=points)


def check_item(item: DrawnItem, reference: ReferenceFrame) -> None:
    """Reject names, points outside the picture and degenerate shapes.

    Raises:
        DrawError: naming the item and the point, e.g. a zero-length line, a
            self-intersecting polygon or a point outside the snapshot.
    """
    points = tuple(Point(x, y) for x, y in item.points)
    try:
        if item.kind is ItemKind.LINE:
            LineSpec(name=item.name, start=points[0], end=points[1]).check(reference)
        elif item.kind is ItemKind.ZONE:
            ZoneSpec(name=item.name, points=points).check(reference)
        else:
            check_name(item.name, "mask")
            for index, point in enumerate(points):
                reference.check_inside(point, f"mask {item.name!r} point {index}")
            Polygon(points, name=f"mask {item.name!r}")
    except GeometryError as error:
        raise DrawError(str(error)) from None


def apply_items(
    document: ConfigDocument,
    items: Sequence[DrawnItem],
    resolution_wh: tuple[int, int],
    *,
    normalized: bool = False,
) -> list[str]:
    """Check the items and write them into the config document.

    An item replaces the config's entry of the same kind and name, keeping
    that entry's other settings (classes, hysteresis) and comments; a new
    name is appended.

    Args:
        document: the config being edited; saved by the caller.
        items: lines, zones and masks in snapshot pixels.
        resolution_wh: the snapshot's width and height.
        normalized: store fractions 0..1 instead of snapshot pixels.

    Returns:
        One line per item saying what changed, for the CLI's output.

    Raises:
        DrawError: on the first invalid item; the document is unchanged.
    """
    snapshot_frame = ReferenceFrame.pixels(resolution_wh)
    for item in items:
        check_item(item, snapshot_frame)
    _check_unique(items)

    target = ReferenceFrame.unit() if normalized else snapshot_frame
    _convert_existing(document, snapshot_frame, target)
    _set_geometry(document, resolution_wh, normalized=normalized)

    changes = []
    for item in items:
        points = [_convert((x, y), snapshot_frame, target) for x, y in item.points]
        changes.append(_upsert(document, item, points))
    return changes


def _check_unique(items: Sequence[DrawnItem]) -> None:
    seen: set[tuple[ItemKind, str]] = set()
    for item in items:
        key = (item.kind, item.name)
        if key in seen:
            raise DrawError(
                f"{item.kind.value} {item.name!r} is given twice; give each name once"
            )
        seen.add(key)


def _current_frame(
    document: ConfigDocument, snapshot_frame: ReferenceFrame
) -> ReferenceFrame:
    geometry = document.data.get("geometry") or {}
    if geometry.get("units") == "normalized":
        return ReferenceFrame.unit()
    resolution = geometry.get("reference_resolution")
    if resolution is None or resolution == "source":
        # "source" means the stream's own resolution, which is what the
        # snapshot of that stream has.
        return snapshot_frame
    return ReferenceFrame.pixels([float(value) for value in resolution])


def _convert_existing(
    document: ConfigDocument, snapshot_frame: ReferenceFrame, target: ReferenceFrame
) -> None:
    current = _current_frame(document, snapshot_frame)
    if (current.width, current.height, current.normalised) == (
        target.width,
        target.height,
        target.normalised,
    ):
        return
    for kind in ItemKind:
        entries = document.data.get(kind.config_key) or []
        for entry in entries:
            points = entry.get(kind.points_key) or []
            entry[kind.points_key] = flow_points(
                [_convert((float(x), float(y)), current, target) for x, y in points]
            )
    logger.info("converted existing geometry from %s to %s", current, target)


def _convert(
    point: tuple[float, float], source: ReferenceFrame, target: ReferenceFrame
) -> list[float]:
    x = point[0] / source.width * target.width
    y = point[1] / source.height * target.height
    digits = _NORMALISED_DIGITS if target.normalised else _PIXEL_DIGITS
    return [round(x, digits), round(y, digits)]


def _set_geometry(
    document: ConfigDocument, resolution_wh: tuple[int, int], *, normalized: bool
) -> None:
    geometry = document.section("geometry")
    if normalized:
        geometry["units"] = "normalized"
        geometry.pop("reference_resolution", None)
        return
    geometry["reference_resolution"] = flow_list(list(resolution_wh))
    if "units" in geometry:
        geometry["units"] = "pixels"


def _upsert(
    document: ConfigDocument, item: DrawnItem, points: Iterable[Sequence[float]]
) -> str:
    entries = document.items(item.kind.config_key)
    value = flow_points(list(points))
    for entry in entries:
        if entry.get("name") == item.name:
            entry[item.kind.points_key] = value
            return f"updated {item.kind.value} {item.name!r}"
    entry_map: dict[str, Any] = {"name": item.name, item.kind.points_key: value}
    entries.append(CommentedMap(entry_map))
    return f"added {item.kind.value} {item.name!r}"


def remove_items(
    document: ConfigDocument, kind: ItemKind, names: Iterable[str]
) -> list[str]:
    """Delete entries of `kind` by name.

    Raises:
        DrawError: when a name is not in the config; the message lists the
            names that are.
    """
    changes = []
    entries = document.items(kind.config_key)
    for name in names:
        index = next(
            (i for i, entry in enumerate(entries) if entry.get("name") == name), None
        )
        if index is None:
            known = ", ".join(repr(entry.get("name")) for entry in entries) or "none"
            raise DrawError(
                f"there is no {kind.value} named {name!r} to remove; configured: "
                f"{known}"
            )
        del entries[index]
        changes.append(f"removed {kind.value} {name!r}")
    return changes
