"""Checks of the marked points that a ground-plane homography is fitted to.

`sitlab-calibrate ground` runs them before and after the fit, and the node
runs them on a stored `ground` section. A homography that the points cannot
have produced, or that puts a marked point beyond the horizon, is therefore
rejected in both places with the same message.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MIN_POINTS = 4
# Three points are near-collinear when the triangle's height is below this
# share of its longest side (about 1.1 degrees at the sharpest corner).
COLLINEAR_RATIO = 0.02
# Points closer than this are duplicates: pixels in the image, metres on the
# ground.
DUPLICATE_PX = 2.0
DUPLICATE_M = 0.05
# A stored homography matches its points when each point's recomputed error
# is within this of its stored error (0 when none is stored). The larger of
# the two bounds applies: 5 cm covers a homography rounded by hand to six
# digits, and 1 % of the points' extent covers sites hundreds of metres wide.
MATCH_TOLERANCE_M = 0.05
MATCH_TOLERANCE_SHARE = 0.01
# A homogeneous w this small against the largest w of the marked points puts
# the point on the horizon: its ground position is at infinity.
_HORIZON_RATIO = 1e-9
_WRONG_ORDER_FIX = (
    "the points are probably in the wrong order; pair each image point with its "
    "own measured position and run `sitlab-calibrate ground` again"
)


class PointSetError(ValueError):
    """Marked points from which no ground plane can be made or checked."""


def check_point_set(points: FloatArray, kind: str, duplicate: float) -> None:
    """Reject point sets that cannot define a homography.

    A homography needs four points of which no three are on one line. With
    more points, some collinear triples are fine as long as such a four-point
    subset exists.

    Args:
        points: (N, 2) points.
        kind: "image" or "world", for the message.
        duplicate: distance under which two points count as the same.

    Raises:
        PointSetError: naming the points (1-based, in the order given) for
            too few, non-finite, duplicate or collinear points.
    """
    count = len(points)
    if count < MIN_POINTS:
        raise PointSetError(
            f"{count} point(s) given; a ground plane needs at least {MIN_POINTS} "
            "points, no three of them on one line (5 or more let the error be "
            "checked)"
        )
    for index, point in enumerate(points):
        if not np.all(np.isfinite(point)):
            raise PointSetError(
                f"{kind} point {index + 1} {_fmt(point)} is not a finite number; "
                "give measured numbers for every point"
            )
    for i, j in itertools.combinations(range(count), 2):
        if float(np.hypot(*(points[i] - points[j]))) < duplicate:
            raise PointSetError(
                f"{kind} points {i + 1} and {j + 1} are the same place "
                f"({_fmt(points[i])} and {_fmt(points[j])}); mark distinct points"
            )
    collinear = [
        triple
        for triple in itertools.combinations(range(count), 3)
        if _near_collinear(points[list(triple)])
    ]
    if not collinear:
        return
    bad = set(collinear)
    for quad in itertools.combinations(range(count), 4):
        if not any(triple in bad for triple in itertools.combinations(quad, 3)):
            return
    names = "; ".join(
        ", ".join(f"{i + 1} {_fmt(points[i])}" for i in triple) for triple in collinear
    )
    raise PointSetError(
        f"{kind} points are (nearly) collinear: {names}. A ground plane needs four "
        "points with no three on one line; mark points that span an area, e.g. "
        "the corners of a parking bay or crossing"
    )


def check_horizon(homography: FloatArray, image_xy: FloatArray) -> None:
    """Reject a homography that puts a marked point on or beyond its horizon.

    The horizon is the image line where the homogeneous w of the mapped point
    is 0. Points on the visible ground all have w of one sign, and the
    mapping's orientation (the sign of its Jacobian, det(H) / w^3) is the
    same at all of them. Marked points on both sides of the horizon mean that
    some are mapped as if they were behind the camera, which happens when
    image and world points are paired in the wrong order.

    Raises:
        PointSetError: naming the points on the horizon or on its far side.
    """
    homogeneous = np.hstack([image_xy, np.ones((len(image_xy), 1))])
    w = homogeneous @ homography[2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        world = (homogeneous @ homography[:2].T) / w[:, None]
    scale = float(np.max(np.abs(w)))
    on_horizon = [
        index
        for index in range(len(w))
        if not (
            abs(w[index]) > _HORIZON_RATIO * scale and np.all(np.isfinite(world[index]))
        )
    ]
    if on_horizon:
        raise PointSetError(
            f"the homography puts image {_points(on_horizon, image_xy)} on its "
            f"horizon, where no ground position exists; {_WRONG_ORDER_FIX}"
        )
    positive = [index for index in range(len(w)) if w[index] > 0]
    negative = [index for index in range(len(w)) if w[index] < 0]
    if positive and negative:
        # The smaller group is on the far side; on a tie, the group with
        # point 1 is taken as the visible ground.
        far, near = sorted(
            (positive, negative), key=lambda group: (len(group), 0 in group)
        )
        raise PointSetError(
            f"the homography puts image {_points(far, image_xy)} beyond its "
            f"horizon, on the other side from {_points(near, image_xy)}, so its "
            "orientation flips between them as for points behind the camera; "
            f"{_WRONG_ORDER_FIX}"
        )


def check_match(
    homography: FloatArray,
    image_xy: FloatArray,
    world_m: FloatArray,
    errors_m: FloatArray | None = None,
) -> None:
    """Reject a stored homography that does not map its image points as stored.

    Args:
        homography: 3x3 from image pixels to metres.
        image_xy: (N, 2) marked image points (undistorted when a lens is used).
        world_m: (N, 2) their measured positions in metres.
        errors_m: the stored error of each point; points that RANSAC dropped
            keep their large error there.

    Raises:
        PointSetError: naming the first point whose error differs from the
            stored one by more than the tolerance.
    """
    homogeneous = np.hstack([image_xy, np.ones((len(image_xy), 1))]) @ homography.T
    mapped = homogeneous[:, :2] / homogeneous[:, 2:3]
    errors = np.hypot(*(mapped - world_m).T)
    stored = np.zeros(len(errors)) if errors_m is None else errors_m
    extent = float(np.max(np.ptp(world_m, axis=0)))
    tolerance = max(MATCH_TOLERANCE_M, MATCH_TOLERANCE_SHARE * extent)
    for index, (error, expected) in enumerate(zip(errors, stored, strict=True)):
        if abs(float(error) - float(expected)) > tolerance:
            raise PointSetError(
                f"the homography does not match the points: image point "
                f"{index + 1} {_fmt(image_xy[index])} maps to "
                f"{_fmt(mapped[index])} m, {error:.3g} m from its world point "
                f"{_fmt(world_m[index])} (stored error {expected:.3g} m, tolerance "
                f"{tolerance:.3g} m); run `sitlab-calibrate ground` again"
            )


def is_mirrored(homography: FloatArray, image_xy: FloatArray) -> bool:
    """Tell whether the mapping mirrors the picture at the marked points.

    A camera that looks down at the ground shows a right-handed east-north
    frame with image y pointing down, so the Jacobian of the image-to-ground
    mapping is negative. A positive one means a left-handed world frame
    (east and north swapped) or two points paired with each other's
    positions. Distances are right either way; directions are mirrored.
    """
    point = np.append(image_xy.mean(axis=0), 1.0)
    w = float(point @ homography[2])
    return float(np.linalg.det(homography)) / w**3 > 0


def _near_collinear(triangle: FloatArray) -> bool:
    a, b, c = triangle
    area2 = abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    longest = max(
        float(np.hypot(*(b - a))), float(np.hypot(*(c - b))), float(np.hypot(*(a - c)))
    )
    return bool(area2 / longest < COLLINEAR_RATIO * longest)


def _points(indices: list[int], image_xy: FloatArray) -> str:
    names = [f"{index + 1} {_fmt(image_xy[index])}" for index in indices]
    noun = "point" if len(names) == 1 else "points"
    if len(names) > 1:
        return f"{noun} {', '.join(names[:-1])} and {names[-1]}"
    return f"{noun} {names[0]}"


def _fmt(point: FloatArray) -> str:
    return f"({point[0]:g}, {point[1]:g})"
