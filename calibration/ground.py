"""Ground-plane homography from marked points with measured positions.

The technician marks four or more points on the ground in the snapshot and
measures where they are: metres east and north in a local frame (tape
measure, site plan) or WGS84 latitude and longitude (survey GNSS).

WGS84 points are turned into metres east and north of their centroid on
the local tangent plane: each point goes to Earth-centred coordinates on the
WGS84 ellipsoid and is projected on the plane that touches the ellipsoid at
the centroid (the east-north-up frame, without the up part). The plane
departs from the ellipsoid by d^2 / 2R, 8 mm at 320 m and 7.8 cm at 1 km from
the centroid, and the homography also assumes flat ground; keep the marked
points within a few hundred metres. The accuracy is then that of the
measured coordinates: a phone's GNSS fix is off by 2 to 5 m, so use survey
GNSS (RTK, a few cm) or tape measurements.

With up to 6 points the homography is a least-squares fit of all of them
(RANSAC would have too few points to vote); with more, RANSAC drops points
whose error exceeds `ransac_threshold_m` and the rest are fitted.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from edge.config_calibration import GroundConfig, LensConfig
from edge.lens import LensModel

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

MIN_POINTS = 4
LEAST_SQUARES_MAX_POINTS = 6
DEFAULT_RANSAC_THRESHOLD_M = 0.3
# WGS84 ellipsoid.
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
# Three points are near-collinear when the triangle's height is below this
# share of its longest side (about 1.1 degrees at the sharpest corner).
COLLINEAR_RATIO = 0.02
# Points closer than this are duplicates: pixels in the image, metres on the
# ground.
DUPLICATE_PX = 2.0
DUPLICATE_M = 0.05


class GroundCalibrationError(CalibrationError):
    """Point sets from which no ground plane can be made."""


@dataclass(frozen=True, slots=True)
class PointPair:
    """A marked image point and its measured position.

    Attributes:
        image_xy: pixels in the snapshot.
        world: east, north in metres, or latitude, longitude in degrees.
    """

    image_xy: tuple[float, float]
    world: tuple[float, float]


@dataclass(frozen=True, slots=True)
class GroundFit:
    """A fitted ground plane and how well it fits.

    Attributes:
        homography: 3x3 from image pixels (undistorted when a lens is used)
            to metres.
        world_m: the measured points in metres.
        errors_m: distance between each mapped image point and its
            measured position.
        loo_errors_m: leave-one-out errors (the point's error when it is
            left out of the fit), with 5 points or more; None otherwise.
        inliers: per point, False when RANSAC dropped it.
    """

    homography: FloatArray
    world_m: FloatArray
    errors_m: FloatArray
    loo_errors_m: FloatArray | None
    inliers: tuple[bool, ...]

    @property
    def rms_error_m(self) -> float:
        """RMS of `errors_m` over the inliers."""
        kept = self.errors_m[np.array(self.inliers)]
        return float(np.sqrt(np.mean(kept**2)))


def parse_point(text: str) -> PointPair:
    """Parse `X,Y=A,B` as given to --point.

    Raises:
        GroundCalibrationError: naming the text and the expected form.
    """
    image, _, world = text.partition("=")
    try:
        x, y = (float(value) for value in image.split(","))
        a, b = (float(value) for value in world.split(","))
    except ValueError:
        raise GroundCalibrationError(
            f"--point {text!r} is invalid; write X,Y=EAST,NORTH (pixels = metres) "
            "or X,Y=LAT,LON with --wgs84"
        ) from None
    values = (x, y, a, b)
    if not all(math.isfinite(value) for value in values):
        raise GroundCalibrationError(f"--point {text!r} contains a non-finite number")
    return PointPair((x, y), (a, b))


def wgs84_to_local(
    lat_lon: FloatArray | Sequence[Sequence[float]],
    origin: Sequence[float] | None = None,
) -> tuple[FloatArray, tuple[float, float]]:
    """Convert latitude/longitude to metres east and north of an origin.

    Args:
        lat_lon: (N, 2) degrees.
        origin: latitude and longitude of (0, 0); the centroid by default.

    Returns:
        (N, 2) east, north in metres, and the origin used.

    Raises:
        GroundCalibrationError: on a latitude or longitude out of range.
    """
    points = np.asarray(lat_lon, dtype=np.float64).reshape(-1, 2)
    for index, (lat, lon) in enumerate(points):
        if not (-90 < lat < 90 and -180 <= lon <= 180):
            raise GroundCalibrationError(
                f"point {index + 1} has latitude {lat:g}, longitude {lon:g}; "
                "latitude must be in (-90, 90) and longitude in [-180, 180] "
                "(give LAT,LON in that order)"
            )
    lat0, lon0 = (float(v) for v in (origin or points.mean(axis=0)))
    offsets = _ecef(points[:, 0], points[:, 1]) - _ecef(
        np.array([lat0]), np.array([lon0])
    )
    phi, lam = math.radians(lat0), math.radians(lon0)
    east_axis = np.array([-math.sin(lam), math.cos(lam), 0.0])
    north_axis = np.array(
        [
            -math.sin(phi) * math.cos(lam),
            -math.sin(phi) * math.sin(lam),
            math.cos(phi),
        ]
    )
    east = offsets @ east_axis
    north = offsets @ north_axis
    return np.stack([east, north], axis=1), (lat0, lon0)


def _ecef(lat_deg: FloatArray, lon_deg: FloatArray) -> FloatArray:
    """Return (N, 3) Earth-centred coordinates of points on the ellipsoid."""
    phi, lam = np.radians(lat_deg), np.radians(lon_deg)
    prime_vertical = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
    return np.stack(
        [
            prime_vertical * np.cos(phi) * np.cos(lam),
            prime_vertical * np.cos(phi) * np.sin(lam),
            prime_vertical * (1.0 - WGS84_E2) * np.sin(phi),
        ],
        axis=1,
    )


def check_point_set(points: FloatArray, what: str, duplicate: float) -> None:
    """Reject point sets that cannot define a homography.

    A homography needs four points of which no three are on one line. With
    more points, some collinear triples are fine as long as such a four-point
    subset exists.

    Args:
        points: (N, 2) points.
        what: "image" or "world", for the message.
        duplicate: distance under which two points count as the same.

    Raises:
        GroundCalibrationError: naming the points (1-based, in the order
            given) for too few, duplicate or collinear points.
    """
    count = len(points)
    if count < MIN_POINTS:
        raise GroundCalibrationError(
            f"{count} point(s) given; a ground plane needs at least {MIN_POINTS} "
            "points, no three of them on one line (5 or more let the error be "
            "checked)"
        )
    for i, j in itertools.combinations(range(count), 2):
        if float(np.hypot(*(points[i] - points[j]))) < duplicate:
            raise GroundCalibrationError(
                f"{what} points {i + 1} and {j + 1} are the same place "
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
    raise GroundCalibrationError(
        f"{what} points are (nearly) collinear: {names}. A ground plane needs four "
        "points with no three on one line; mark points that span an area, e.g. "
        "the corners of a parking bay or crossing"
    )


def _near_collinear(triangle: FloatArray) -> bool:
    a, b, c = triangle
    area2 = abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    longest = max(
        float(np.hypot(*(b - a))), float(np.hypot(*(c - b))), float(np.hypot(*(a - c)))
    )
    return bool(area2 / longest < COLLINEAR_RATIO * longest)


def _fmt(point: FloatArray) -> str:
    return f"({point[0]:g}, {point[1]:g})"


def fit_homography(
    image_xy: FloatArray,
    world_m: FloatArray,
    *,
    ransac_threshold_m: float = DEFAULT_RANSAC_THRESHOLD_M,
) -> GroundFit:
    """Fit the image-to-ground homography and measure its error.

    Raises:
        GroundCalibrationError: on a degenerate point set, or when OpenCV
            finds no homography.
    """
    check_point_set(image_xy, "image", DUPLICATE_PX)
    check_point_set(world_m, "world", DUPLICATE_M)
    count = len(image_xy)
    if count <= LEAST_SQUARES_MAX_POINTS:
        matrix, _ = cv2.findHomography(image_xy, world_m, 0)
        inliers = (True,) * count
    else:
        matrix, mask = cv2.findHomography(
            image_xy, world_m, cv2.RANSAC, ransac_threshold_m
        )
        inliers = tuple(bool(v) for v in mask.ravel()) if mask is not None else ()
    if matrix is None or len(inliers) != count:
        raise GroundCalibrationError(
            "OpenCV found no homography for these points; check that each image "
            "point matches its measured position"
        )
    if sum(inliers) < MIN_POINTS:
        raise GroundCalibrationError(
            f"only {sum(inliers)} of {count} points agree within "
            f"{ransac_threshold_m:g} m; check the measurements or raise "
            "--ransac-threshold-m"
        )
    homography = np.asarray(matrix, dtype=np.float64)
    homography /= homography[2, 2]
    errors = np.hypot(*(apply_homography(homography, image_xy) - world_m).T)
    loo = _leave_one_out(image_xy, world_m, np.array(inliers))
    return GroundFit(homography, world_m, errors, loo, inliers)


def apply_homography(matrix: FloatArray, points: FloatArray) -> FloatArray:
    """Map (N, 2) points through a 3x3 homography."""
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _leave_one_out(
    image_xy: FloatArray, world_m: FloatArray, inliers: npt.NDArray[np.bool_]
) -> FloatArray | None:
    """Return each inlier's error when the fit is made without it.

    With exactly four points a homography fits them exactly, so its own
    errors are zero and carry no information. This error shows how well the
    plane predicts a point it has not seen.
    """
    kept = np.flatnonzero(inliers)
    if len(kept) <= MIN_POINTS:
        return None
    errors = np.full(len(image_xy), np.nan)
    for index in kept:
        others = kept[kept != index]
        try:
            check_point_set(image_xy[others], "image", DUPLICATE_PX)
            check_point_set(world_m[others], "world", DUPLICATE_M)
        except GroundCalibrationError:
            # Without this point the rest is degenerate, so it cannot be
            # predicted from them and its error stays NaN (not measurable).
            continue
        matrix, _ = cv2.findHomography(image_xy[others], world_m[others], 0)
        if matrix is None:
            continue
        predicted = apply_homography(np.asarray(matrix), image_xy[index : index + 1])
        errors[index] = float(np.hypot(*(predicted[0] - world_m[index])))
    return errors


def build_ground(
    pairs: Sequence[PointPair],
    resolution_wh: tuple[int, int],
    *,
    wgs84: bool = False,
    lens: LensConfig | None = None,
    ransac_threshold_m: float = DEFAULT_RANSAC_THRESHOLD_M,
) -> tuple[GroundFit, GroundConfig]:
    """Fit the ground plane from point pairs and return it as a config section.

    Args:
        pairs: marked points with their measured positions.
        resolution_wh: the snapshot's size; image points must lie inside it.
        wgs84: the measured positions are latitude, longitude in degrees.
        lens: when given, image points are undistorted before the fit.
        ransac_threshold_m: error above which RANSAC drops a point (more
            than 6 points only).

    Raises:
        GroundCalibrationError: on points outside the picture or a
            degenerate set.
    """
    width, height = resolution_wh
    image = np.array([pair.image_xy for pair in pairs], dtype=np.float64)
    for index, (x, y) in enumerate(image):
        if not (0 <= x <= width and 0 <= y <= height):
            raise GroundCalibrationError(
                f"image point {index + 1} ({x:g}, {y:g}) is outside the "
                f"{width}x{height} snapshot"
            )
    measured = np.array([pair.world for pair in pairs], dtype=np.float64)
    origin = None
    world = measured
    if wgs84:
        world, origin = wgs84_to_local(measured)
    fit_points = image
    if lens is not None:
        model = LensModel.from_config(lens).for_stream(resolution_wh)
        fit_points = model.undistort_points(image)
    fit = fit_homography(fit_points, world, ransac_threshold_m=ransac_threshold_m)
    config = GroundConfig(
        resolution=resolution_wh,
        image_points=[(float(x), float(y)) for x, y in image],
        world_points=[(round(float(e), 4), round(float(n), 4)) for e, n in world],
        wgs84_points=[(float(a), float(b)) for a, b in measured] if wgs84 else None,
        origin_wgs84=(round(origin[0], 9), round(origin[1], 9)) if origin else None,
        lens_corrected=lens is not None,
        homography=tuple(tuple(float(v) for v in row) for row in fit.homography),  # type: ignore[arg-type]
        errors_m=[round(float(e), 4) for e in fit.errors_m],
        rms_error_m=round(fit.rms_error_m, 4),
    )
    return fit, config
