"""Geometry value objects: validation, point-in-polygon, scaling to the stream."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.analytics import Analytics, LineSpec, ZoneSpec
from edge.analytics.geometry import (
    GeometryError,
    Point,
    Polygon,
    ReferenceFrame,
    Segment,
    anchors_xy,
    require_reference,
)
from edge.types import Anchor


def points(*xy: tuple[float, float]) -> tuple[Point, ...]:
    return tuple(Point(x, y) for x, y in xy)


SQUARE = Polygon(points((0, 0), (10, 0), (10, 10), (0, 10)), name="zone 'square'")


@pytest.mark.parametrize(
    ("vertices", "match"),
    [
        (((0, 0), (10, 0)), r"zone 'z' has 2 points; a polygon needs at least 3"),
        (((0, 0), (5, 5), (10, 10)), r"zone 'z' has zero area"),
        (
            ((0, 0), (10, 10), (10, 0), (0, 10)),
            r"zone 'z' is self-intersecting: edge 0 \(\(0, 0\) -> \(10, 10\)\) "
            r"crosses edge 2 \(\(10, 0\) -> \(0, 10\)\)",
        ),
        (((0, 0), (10, 0), (10, 0), (0, 10)), r"zone 'z' repeats point \(10, 0\)"),
        (
            ((0, 0), (10, 0), (5, 0), (5, 10)),
            r"zone 'z' is self-intersecting: edge 0 .* crosses edge 1",
        ),
    ],
    ids=["two points", "zero area", "bow tie", "duplicate point", "edge folds back"],
)
def test_invalid_polygon(vertices, match):
    with pytest.raises(GeometryError, match=match):
        Polygon(points(*vertices), name="zone 'z'")


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((5, 5), True),
        ((15, 5), False),
        ((-0.001, 5), False),
        ((0, 5), True),
        ((10, 10), True),
        ((5, 10), True),
        ((5, 10.001), False),
    ],
    ids=[
        "centre",
        "right of it",
        "just outside left edge",
        "on left edge",
        "on a vertex",
        "on bottom edge",
        "just below bottom edge",
    ],
)
def test_contains_square(point, inside):
    assert SQUARE.contains(Point(*point)) is inside


def test_contains_concave():
    # A U shape: the notch between the arms is outside.
    shape = Polygon(
        points((0, 0), (3, 0), (3, 10), (7, 10), (7, 0), (10, 0), (10, 12), (0, 12))
    )
    xy = np.array([[1, 1], [5, 5], [5, 11], [8, 1], [5, 10]], dtype=np.float64)
    assert shape.contains_xy(xy).tolist() == [True, False, True, True, True]


def test_contains_xy_empty():
    assert SQUARE.contains_xy(np.zeros((0, 2))).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    radii=st.lists(st.integers(20, 100), min_size=3, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_contains_matches_opencv(radii, seed):
    """A star-shaped polygon agrees with cv2.pointPolygonTest(...) >= 0."""
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    vertices = [
        (round(120 + r * np.cos(a)), round(120 + r * np.sin(a)))
        for r, a in zip(radii, angles, strict=True)
    ]
    try:
        polygon = Polygon(points(*vertices))
    except GeometryError:
        return  # rounding made the outline degenerate
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 240, size=(200, 2)).astype(np.float64)
    contour = np.array(vertices, dtype=np.int32).reshape(-1, 1, 2)
    expected = [
        cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in xy
    ]
    assert polygon.contains_xy(xy).tolist() == expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (((0, 0), (10, 10)), ((0, 10), (10, 0)), True),
        (((0, 0), (10, 0)), ((10, 0), (10, 5)), True),
        (((0, 0), (10, 0)), ((5, 0), (15, 0)), True),
        (((0, 0), (10, 0)), ((11, 0), (15, 0)), False),
        (((0, 0), (10, 0)), ((0, 1), (10, 1)), False),
        (((0, 0), (10, 0)), ((5, 1), (5, 5)), False),
        (((0, 0), (10, 0)), ((5, -1), (5, 0)), True),
    ],
    ids=[
        "proper crossing",
        "touch at end point",
        "collinear overlap",
        "collinear apart",
        "parallel",
        "short of the line",
        "ends on the line",
    ],
)
def test_segment_intersects(first, second, expected):
    a = Segment(*points(*first))
    b = Segment(*points(*second))
    assert a.intersects(b) is expected
    assert b.intersects(a) is expected


def test_signed_distance_is_perpendicular_pixels():
    segment = Segment(Point(0, 500), Point(1000, 500))
    assert segment.signed_distance(Point(300, 530)) == pytest.approx(30.0)
    assert segment.signed_distance(Point(300, 470)) == pytest.approx(-30.0)


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        (Anchor.BOTTOM_CENTER, [20.0, 40.0]),
        (Anchor.CENTER, [20.0, 30.0]),
        (Anchor.TOP_CENTER, [20.0, 20.0]),
    ],
    ids=["bottom centre", "centre", "top centre"],
)
def test_anchors_xy(anchor, expected):
    xy = anchors_xy([(10.0, 20.0, 30.0, 40.0)], anchor)
    assert xy.tolist() == [expected]
    assert anchor.point((10.0, 20.0, 30.0, 40.0)) == tuple(expected)


BOTTOM_RIGHT = ZoneSpec(
    "bottom right", points((640, 360), (1280, 360), (1280, 720), (640, 720))
)


@pytest.mark.parametrize(
    ("anchor", "inside"),
    [
        ((1920, 1200), True),
        ((900, 500), False),
        ((1280, 720), True),
        ((1279, 719), False),
    ],
    ids=["inside after scaling", "outside", "corner of scaled zone", "unscaled corner"],
)
def test_reference_scaling_to_stream(anchor, inside):
    reference = ReferenceFrame.pixels([1280, 720])
    monitor = BOTTOM_RIGHT.build(reference, (2560, 1440), [0])
    assert monitor.polygon.contains(Point(*anchor)) is inside


def test_normalised_reference_scaling():
    point = ReferenceFrame.unit().to_stream(Point(0.5, 0.25), (1920, 1080))
    assert point == Point(960, 270)


MISSING_REFERENCE = (
    r"the node refuses to start: lines/zones are given in pixels but "
    r"geometry.reference_resolution is missing; set it to the resolution the "
    r"points were drawn on, e.g. \[1280, 720\], or give normalised coordinates"
)


def test_missing_reference_refuses_to_start():
    with pytest.raises(GeometryError, match=MISSING_REFERENCE):
        Analytics([], [BOTTOM_RIGHT], reference=None, class_names=["person"])


def test_missing_reference_without_geometry_is_fine():
    assert require_reference(None, []) is None
    analytics = Analytics([], [], reference=None, class_names=["person"])
    assert analytics.resolution_wh is None


@pytest.mark.parametrize(
    ("reference", "spec", "match"),
    [
        (
            ReferenceFrame.pixels([1280, 720]),
            LineSpec("door", Point(0, 500), Point(1300, 500)),
            r"line 'door' end \(1300, 500\) is outside the reference frame 1280x720; "
            r"points must satisfy 0 <= x <= 1280 and 0 <= y <= 720",
        ),
        (
            ReferenceFrame.unit(),
            ZoneSpec("lobby", points((0.1, 0.1), (0.9, 0.1), (0.5, 1.2))),
            r"zone 'lobby' point 2 \(0.5, 1.2\) is outside the normalised frame",
        ),
        (
            ReferenceFrame.unit(),
            LineSpec("door", Point(0.5, 0.5), Point(0.5, 0.5)),
            r"line 'door' has zero length",
        ),
        (
            ReferenceFrame.unit(),
            ZoneSpec("lobby", points((0, 0), (1, 1), (1, 0), (0, 1))),
            r"zone 'lobby' is self-intersecting: edge 0",
        ),
    ],
    ids=[
        "line point outside",
        "zone point outside",
        "zero-length line",
        "bow-tie zone",
    ],
)
def test_invalid_spec(reference, spec, match):
    with pytest.raises(GeometryError, match=match):
        spec.check(reference)


@pytest.mark.parametrize(
    ("resolution", "match"),
    [
        ([1280], r"reference_resolution must be \[width, height\], got \[1280\]"),
        ([0, 720], r"must be two positive numbers \[width, height\], got \[0, 720\]"),
    ],
    ids=["one number", "zero width"],
)
def test_invalid_reference(resolution, match):
    with pytest.raises(GeometryError, match=match):
        ReferenceFrame.pixels(resolution)
