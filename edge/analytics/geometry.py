"""Points, segments and polygons of lines and zones, and their scaling to a stream.

Coordinates are image coordinates: x grows to the right and y grows down the
screen, as in OpenCV. Line and zone geometry is drawn on a reference frame
(pixels of a declared resolution, or normalised 0..1) and scaled to the
resolution of the stream before any counting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.types import Anchor

# Name rule of the counts message schema for line and zone names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$")

# Slack for "on the edge" tests, in pixels: far below any detector's precision
# and far above float rounding of scaled coordinates.
_EDGE_TOLERANCE = 1e-6


class GeometryError(ValueError):
    """Line or zone geometry that cannot be counted on."""


@dataclass(frozen=True, slots=True)
class Point:
    """A point in image coordinates (x right, y down)."""

    x: float
    y: float

    def __str__(self) -> str:
        return f"({self.x:g}, {self.y:g})"


def _cross(origin: Point, a: Point, b: Point) -> float:
    """Return the z component of (a - origin) x (b - origin)."""
    return (a.x - origin.x) * (b.y - origin.y) - (a.y - origin.y) * (b.x - origin.x)


def _within_box(a: Point, b: Point, p: Point) -> bool:
    """Return True when p lies in the bounding box of a and b."""
    return (
        min(a.x, b.x) - _EDGE_TOLERANCE <= p.x <= max(a.x, b.x) + _EDGE_TOLERANCE
        and min(a.y, b.y) - _EDGE_TOLERANCE <= p.y <= max(a.y, b.y) + _EDGE_TOLERANCE
    )


def _sign(value: float) -> int:
    if value > 0:
        return 1
    if value < 0:
        return -1
    return 0


@dataclass(frozen=True, slots=True)
class Segment:
    """A closed segment from `start` to `end`; its direction matters for sides."""

    start: Point
    end: Point

    def __str__(self) -> str:
        return f"{self.start} -> {self.end}"

    @property
    def length(self) -> float:
        """Euclidean length in pixels."""
        return math.hypot(self.end.x - self.start.x, self.end.y - self.start.y)

    def cross(self, point: Point) -> float:
        """Return (Bx-Ax)*(Py-Ay) - (By-Ay)*(Px-Ax) for A=start, B=end, P=point.

        With y pointing down the screen, a positive value means P is on the
        right-hand side of the arrow A->B as seen on screen (for A=(0, 500),
        B=(1000, 500) that is below the line), a negative value means the
        left-hand side, and zero means P is on the infinite line.
        """
        return _cross(self.start, self.end, point)

    def signed_distance(self, point: Point) -> float:
        """Return the perpendicular distance of P to the infinite line, signed.

        The sign is the sign of `cross`: positive on the right-hand side.
        """
        return self.cross(point) / self.length

    def intersects(self, other: Segment) -> bool:
        """Return True when the two closed segments share at least one point.

        Touching at an endpoint and collinear overlap both count, so a step
        that ends exactly on a line intersects it.
        """
        d1 = _sign(_cross(self.start, self.end, other.start))
        d2 = _sign(_cross(self.start, self.end, other.end))
        d3 = _sign(_cross(other.start, other.end, self.start))
        d4 = _sign(_cross(other.start, other.end, self.end))
        if d1 * d2 < 0 and d3 * d4 < 0:
            return True
        return (
            (d1 == 0 and _within_box(self.start, self.end, other.start))
            or (d2 == 0 and _within_box(self.start, self.end, other.end))
            or (d3 == 0 and _within_box(other.start, other.end, self.start))
            or (d4 == 0 and _within_box(other.start, other.end, self.end))
        )


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon: at least 3 points, non-zero area, no crossing edges.

    Points on the boundary count as inside, as in OpenCV's
    `pointPolygonTest(...) >= 0`, so an anchor resting on a zone's edge is in
    the zone.

    Attributes:
        points: vertices in drawing order (either orientation); the last
            point connects back to the first.
        name: what error messages call the polygon, e.g. "zone 'lobby'".
    """

    points: tuple[Point, ...]
    name: str = "polygon"

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise GeometryError(
                f"{self.name} has {len(self.points)} points; a polygon needs at "
                "least 3 points"
            )
        self._check_duplicates()
        if self._collinear():
            raise GeometryError(
                f"{self.name} has zero area (all points {self._point_list()} lie "
                "on one line); draw the zone as an area"
            )
        self._check_crossings()

    def _collinear(self) -> bool:
        first, second = self.points[0], self.points[1]
        return all(
            abs(_cross(first, second, point)) <= _EDGE_TOLERANCE
            for point in self.points[2:]
        )

    def _point_list(self) -> str:
        return ", ".join(str(point) for point in self.points)

    def _check_duplicates(self) -> None:
        for index, edge in enumerate(self.edges):
            if edge.length <= _EDGE_TOLERANCE:
                raise GeometryError(
                    f"{self.name} repeats point {edge.start} at positions {index} "
                    f"and {(index + 1) % len(self.points)}; remove the duplicate"
                )

    def _check_crossings(self) -> None:
        edges = self.edges
        count = len(edges)
        for i in range(count):
            for j in range(i + 1, count):
                if self._edges_cross(edges, i, j):
                    raise GeometryError(
                        f"{self.name} is self-intersecting: edge {i} ({edges[i]}) "
                        f"crosses edge {j} ({edges[j]}); list the points in order "
                        "around the outline"
                    )

    @staticmethod
    def _edges_cross(edges: tuple[Segment, ...], i: int, j: int) -> bool:
        first, second = edges[i], edges[j]
        adjacent = j == i + 1 or (i == 0 and j == len(edges) - 1)
        if not adjacent:
            return first.intersects(second)
        # Adjacent edges share a vertex; they cross only when the second one
        # folds back along the first.
        shared = first.end if j == i + 1 else first.start
        a = first.start if j == i + 1 else first.end
        b = second.end if j == i + 1 else second.start
        collinear = abs(_cross(shared, a, b)) <= _EDGE_TOLERANCE
        dot = (a.x - shared.x) * (b.x - shared.x) + (a.y - shared.y) * (b.y - shared.y)
        return collinear and dot > 0

    @property
    def edges(self) -> tuple[Segment, ...]:
        """Edges in drawing order; edge i runs from point i to point i+1."""
        count = len(self.points)
        return tuple(
            Segment(self.points[i], self.points[(i + 1) % count]) for i in range(count)
        )

    @property
    def signed_area(self) -> float:
        """Shoelace area in square pixels; the sign gives the orientation."""
        total = 0.0
        for edge in self.edges:
            total += edge.start.x * edge.end.y - edge.end.x * edge.start.y
        return total / 2.0

    def contains(self, point: Point) -> bool:
        """Return True when the point is inside or on the boundary."""
        xy = np.array([[point.x, point.y]], dtype=np.float64)
        return bool(self.contains_xy(xy)[0])

    def contains_xy(self, xy: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """Test many points at once; boundary points count as inside.

        Args:
            xy: array of shape (N, 2) with x and y per row.

        Returns:
            Boolean array of shape (N,).
        """
        points = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        vertices = np.array([[p.x, p.y] for p in self.points], dtype=np.float64)
        x1, y1 = vertices[:, 0], vertices[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        px, py = points[:, :1], points[:, 1:]

        # Even-odd rule with a ray towards +x; the half-open test on y counts a
        # vertex exactly once.
        straddles = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at_py = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        crossings = np.count_nonzero(straddles & (px < x_at_py), axis=1)
        inside = crossings % 2 == 1

        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        lengths = np.hypot(x2 - x1, y2 - y1)
        on_line = np.abs(cross) <= _EDGE_TOLERANCE * np.maximum(lengths, 1.0)
        in_box = (
            (px >= np.minimum(x1, x2) - _EDGE_TOLERANCE)
            & (px <= np.maximum(x1, x2) + _EDGE_TOLERANCE)
            & (py >= np.minimum(y1, y2) - _EDGE_TOLERANCE)
            & (py <= np.maximum(y1, y2) + _EDGE_TOLERANCE)
        )
        on_boundary = np.any(on_line & in_box, axis=1)
        result: npt.NDArray[np.bool_] = inside | on_boundary
        return result


def anchors_xy(
    boxes: Sequence[tuple[float, float, float, float]], anchor: Anchor
) -> npt.NDArray[np.float64]:
    """Return the anchor points of `xyxy` boxes as an (N, 2) array."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x = (array[:, 0] + array[:, 2]) / 2.0
    if anchor is Anchor.BOTTOM_CENTER:
        y = array[:, 3]
    elif anchor is Anchor.TOP_CENTER:
        y = array[:, 1]
    else:
        y = (array[:, 1] + array[:, 3]) / 2.0
    return np.stack([x, y], axis=1)


@dataclass(frozen=True, slots=True)
class ReferenceFrame:
    """The frame the geometry was drawn on.

    Attributes:
        width: width of the drawing frame (1.0 when normalised).
        height: height of the drawing frame (1.0 when normalised).
        normalised: True when coordinates are fractions 0..1 of the frame.
    """

    width: float
    height: float
    normalised: bool = False

    def __post_init__(self) -> None:
        if not (self.width > 0 and self.height > 0):
            raise GeometryError(
                "geometry.reference_resolution must be two positive numbers "
                f"[width, height], got [{self.width:g}, {self.height:g}]"
            )

    def __str__(self) -> str:
        if self.normalised:
            return "the normalised frame 0..1 x 0..1"
        return f"the reference frame {self.width:g}x{self.height:g}"

    @classmethod
    def pixels(cls, resolution_wh: Sequence[float]) -> ReferenceFrame:
        """Return a pixel reference frame of `[width, height]`."""
        if len(resolution_wh) != 2:
            raise GeometryError(
                "geometry.reference_resolution must be [width, height], got "
                f"{list(resolution_wh)!r}"
            )
        return cls(float(resolution_wh[0]), float(resolution_wh[1]))

    @classmethod
    def unit(cls) -> ReferenceFrame:
        """Return the normalised frame, where (1, 1) is the bottom-right corner."""
        return cls(1.0, 1.0, normalised=True)

    def check_inside(self, point: Point, owner: str) -> None:
        """Raise GeometryError when `point` lies outside this frame.

        Args:
            point: a point as drawn.
            owner: what the point belongs to, e.g. "line 'door' start".
        """
        if 0.0 <= point.x <= self.width and 0.0 <= point.y <= self.height:
            return
        raise GeometryError(
            f"{owner} {point} is outside {self}; points must satisfy "
            f"0 <= x <= {self.width:g} and 0 <= y <= {self.height:g}"
        )

    def to_stream(self, point: Point, resolution_wh: tuple[int, int]) -> Point:
        """Scale a drawn point to pixels of a stream of `resolution_wh`."""
        width, height = resolution_wh
        return Point(point.x * width / self.width, point.y * height / self.height)


def require_reference(
    reference: ReferenceFrame | None, owners: Sequence[str]
) -> ReferenceFrame | None:
    """Return the reference frame, or raise when geometry has none.

    Args:
        reference: the configured reference frame, None when
            geometry.reference_resolution is missing and coordinates are
            not normalised.
        owners: names of the configured lines and zones, for the message.

    Raises:
        GeometryError: when there are lines or zones but no reference frame.
    """
    if reference is not None or not owners:
        return reference
    raise GeometryError(
        "the node refuses to start: lines/zones are given in pixels but "
        "geometry.reference_resolution is missing; set it to the resolution the "
        "points were drawn on, e.g. [1280, 720], or give normalised coordinates "
        f"(configured: {', '.join(owners)})"
    )


def parse_anchor(anchor: Anchor | str, owner: str) -> Anchor:
    """Return `anchor` as an Anchor; raise GeometryError naming the choices.

    Args:
        anchor: an Anchor or its configuration value, e.g. "bottom_center".
        owner: what the anchor belongs to, e.g. "line 'door'".
    """
    try:
        return Anchor(anchor)
    except ValueError:
        choices = ", ".join(item.value for item in Anchor)
        raise GeometryError(
            f"{owner} anchor {anchor!r} is invalid; expected one of: {choices}"
        ) from None


def check_name(name: str, kind: str) -> None:
    """Raise GeometryError unless `name` is a valid line or zone name.

    Args:
        name: the configured name.
        kind: "line" or "zone".
    """
    if not NAME_PATTERN.match(name):
        raise GeometryError(
            f"{kind} name {name!r} is invalid; use 1 to 64 characters, starting "
            "with a letter or digit, then letters, digits, space, '_', '.', ':' "
            "or '-'"
        )
