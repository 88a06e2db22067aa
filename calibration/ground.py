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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from calibration.lens import Verdict
from edge.config_calibration import GroundConfig, LensConfig
from edge.ground_points import (
    DUPLICATE_M,
    DUPLICATE_PX,
    MIN_POINTS,
    PointSetError,
    check_horizon,
)
from edge.ground_points import check_point_set as check_points
from edge.lens import LensModel

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

LEAST_SQUARES_MAX_POINTS = 6
DEFAULT_RANSAC_THRESHOLD_M = 0.3
# WGS84 ellipsoid.
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
# WGS84 points farther than this from their centroid are not one camera's
# ground; they are most likely metres given with --wgs84.
MAX_WGS84_SPREAD_M = 5000.0
# Verdict thresholds on the worst of the RMS error and the leave-one-out
# errors. 10 cm is what a tape measurement reaches, and 30 cm (the default
# RANSAC threshold) is 3 % of a 10 m speed trap.
GOOD_ERROR_M = 0.1
USABLE_ERROR_M = 0.3


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

    @property
    def worst_error_m(self) -> float:
        """Larger of the RMS error and the largest measurable leave-one-out error."""
        loo = self.loo_errors_m
        if loo is None or not np.any(np.isfinite(loo)):
            return self.rms_error_m
        return max(self.rms_error_m, float(np.nanmax(loo)))

    @property
    def verdict(self) -> Verdict | None:
        """Return the fit's verdict: GOOD under 0.1 m, OK under 0.3 m, else REDO.

        With 4 points it is None, because 4 points always fit exactly and
        their error shows nothing about the measurement.
        """
        if sum(self.inliers) <= MIN_POINTS:
            return None
        worst = self.worst_error_m
        if worst < GOOD_ERROR_M:
            return Verdict.GOOD
        if worst < USABLE_ERROR_M:
            return Verdict.OK
        return Verdict.REDO


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


def check_point_set(points: FloatArray, kind: str, duplicate: float) -> None:
    """Reject point sets that cannot define a homography.

    Raises:
        GroundCalibrationError: naming the points (1-based, in the order
            given) for too few, non-finite, duplicate or collinear points.
    """
    try:
        check_points(points, kind, duplicate)
    except PointSetError as error:
        raise GroundCalibrationError(str(error)) from None


def verdict_advice(fit: GroundFit) -> str:
    """Return what the technician should do after a ground calibration."""
    verdict = fit.verdict
    worst = f"worst error {fit.worst_error_m:.3f} m"
    if verdict is None:
        return (
            "unchecked: 4 points always fit exactly; add a 5th point, away from "
            "the lines through the others, to measure the error"
        )
    if verdict is Verdict.GOOD:
        return f"good: {worst}, under {GOOD_ERROR_M:g} m"
    if verdict is Verdict.OK:
        return (
            f"ok: {worst}, under {USABLE_ERROR_M:g} m; for better accuracy "
            "re-measure the points with the largest leave-one-out error"
        )
    return (
        f"redo: {worst}, {USABLE_ERROR_M:g} m or more; re-measure the points with "
        "the largest errors, or mark points that cover more of the ground"
    )


def fit_homography(
    image_xy: FloatArray,
    world_m: FloatArray,
    *,
    ransac_threshold_m: float = DEFAULT_RANSAC_THRESHOLD_M,
) -> GroundFit:
    """Fit the image-to-ground homography and measure its error.

    Raises:
        GroundCalibrationError: on a degenerate point set, a RANSAC threshold
            that is not a positive number, too few points that agree, or a
            homography that puts a marked point beyond its horizon (points
            paired in the wrong order).
    """
    if not (math.isfinite(ransac_threshold_m) and ransac_threshold_m > 0):
        raise GroundCalibrationError(
            f"--ransac-threshold-m {ransac_threshold_m:g} is invalid; give a "
            f"positive distance in metres (default {DEFAULT_RANSAC_THRESHOLD_M:g})"
        )
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
    if matrix is None or len(inliers) != count or sum(inliers) < MIN_POINTS:
        raise GroundCalibrationError(
            f"no {MIN_POINTS} of the {count} points agree on one ground plane"
            + (
                f" within {ransac_threshold_m:g} m"
                if count > LEAST_SQUARES_MAX_POINTS
                else ""
            )
            + "; check that each image point is paired with its own measured "
            "position, re-measure the points, or raise --ransac-threshold-m"
        )
    homography = np.asarray(matrix, dtype=np.float64)
    homography /= homography[2, 2]
    try:
        check_horizon(homography, image_xy)
    except PointSetError as error:
        raise GroundCalibrationError(str(error)) from None
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
        _check_wgs84_spread(measured, world)
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


def _check_wgs84_spread(measured: FloatArray, local_m: FloatArray) -> None:
    """Reject WGS84 points too far apart to be one camera's ground."""
    distances = np.hypot(local_m[:, 0], local_m[:, 1])
    index = int(np.argmax(distances))
    if distances[index] > MAX_WGS84_SPREAD_M:
        lat, lon = measured[index]
        raise GroundCalibrationError(
            f"point {index + 1} ({lat:g}, {lon:g}) is {distances[index] / 1000:.0f} "
            f"km from the points' centroid; WGS84 points of one camera lie within "
            f"{MAX_WGS84_SPREAD_M / 1000:g} km. If the positions are metres east "
            "and north, drop --wgs84"
        )
