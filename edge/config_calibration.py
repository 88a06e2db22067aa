"""Config sections written by `sitlab-calibrate`: lens, ground plane, tampering.

`NodeConfig` holds them as `lens`, `ground` and `tampering`, each optional.
The technician CLI fills them in; the node reads them through `edge.lens`,
`edge.ground` and the tampering rule. The `speed` section, set by hand,
tunes how the node turns the ground plane into track speeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, NonNegativeFloat, model_validator

from edge.config_base import StrictSection
from edge.ground_points import (
    DUPLICATE_M,
    DUPLICATE_PX,
    PointSetError,
    check_horizon,
    check_match,
    check_point_set,
)

Point = tuple[float, float]
Matrix3 = tuple[
    tuple[float, float, float],
    tuple[float, float, float],
    tuple[float, float, float],
]

# Lengths OpenCV accepts for distortion coefficients: k1 k2 p1 p2 [k3
# [k4 k5 k6 [s1 s2 s3 s4 [tx ty]]]].
DIST_COEFF_LENGTHS = (4, 5, 8, 12, 14)
# Fastest ground speed in km/h that a node reports and a speeding rule takes
# as its limit. Anything faster on a road or walkway is a measurement fault
# (a box jumping between objects, a point near the horizon).
MAX_SPEED_KMH = 500.0
# A homography whose determinant is this close to zero maps the ground plane
# onto a line; nothing measured from it is usable.
_MIN_ABS_DETERMINANT = 1e-12


_Strict = StrictSection


class LensConfig(_Strict):
    """Intrinsics and lens distortion of the camera, from chessboard photos."""

    camera_matrix: Matrix3 = Field(
        description=(
            "3x3 pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels of "
            "`resolution`."
        )
    )
    dist_coeffs: list[float] = Field(
        description=(
            "OpenCV distortion coefficients k1, k2, p1, p2[, k3[, k4, k5, k6 ...]]; "
            "4, 5, 8, 12 or 14 values."
        )
    )
    resolution: tuple[int, int] = Field(
        description="Width and height of the calibration photos in pixels."
    )
    rms_px: float = Field(
        ge=0,
        description=(
            "RMS reprojection error of the calibration in pixels; under 0.5 is "
            "good, under 1 usable, above 1 means the photos should be retaken."
        ),
    )
    images_used: int | None = Field(
        default=None, ge=1, description="Chessboard photos the calibration used."
    )

    @model_validator(mode="after")
    def _check_values(self) -> LensConfig:
        matrix = self.camera_matrix
        fx, fy = matrix[0][0], matrix[1][1]
        if not (fx > 0 and fy > 0):
            raise ValueError(
                f"lens.camera_matrix focal lengths fx={fx:g}, fy={fy:g} must be "
                "positive; run `sitlab-calibrate lens` again"
            )
        if tuple(matrix[2]) != (0.0, 0.0, 1.0):
            raise ValueError(
                f"lens.camera_matrix last row is {list(matrix[2])}; it must be "
                "[0, 0, 1]"
            )
        if len(self.dist_coeffs) not in DIST_COEFF_LENGTHS:
            raise ValueError(
                f"lens.dist_coeffs has {len(self.dist_coeffs)} values; OpenCV "
                f"expects one of {', '.join(map(str, DIST_COEFF_LENGTHS))}"
            )
        width, height = self.resolution
        if width <= 0 or height <= 0:
            raise ValueError(
                f"lens.resolution [{width}, {height}] must be two positive numbers"
            )
        return self


class GroundConfig(_Strict):
    """Mapping of the ground plane from image pixels to metres."""

    resolution: tuple[int, int] = Field(
        description="Width and height of the picture `image_points` were taken on."
    )
    image_points: list[Point] = Field(
        min_length=4,
        description="Marked points in pixels of `resolution`, as seen by the camera.",
    )
    world_points: list[Point] = Field(
        min_length=4,
        description=(
            "The same points on the ground in metres, east and north of a local "
            "origin (or any right-handed x, y frame of the site)."
        ),
    )
    wgs84_points: list[Point] | None = Field(
        default=None,
        description=(
            "The points as measured, [latitude, longitude] in degrees, when they "
            "were given in WGS84; `world_points` is then derived from them."
        ),
    )
    origin_wgs84: Point | None = Field(
        default=None,
        description="[latitude, longitude] of the local frame's origin (0, 0).",
    )
    lens_corrected: bool = Field(
        default=False,
        description=(
            "True when `image_points` were undistorted with the `lens` section "
            "before the fit; the node then undistorts anchors the same way."
        ),
    )
    homography: Matrix3 = Field(
        description=(
            "3x3 matrix from image pixels (homogeneous x, y, 1) to ground metres."
        )
    )
    errors_m: list[NonNegativeFloat] | None = Field(
        default=None,
        description=(
            "Distance in metres between each mapped image point and its world point."
        ),
    )
    rms_error_m: float | None = Field(
        default=None, ge=0, description="RMS of `errors_m`."
    )

    @model_validator(mode="after")
    def _check_values(self) -> GroundConfig:
        self._check_counts()
        self._check_resolution()
        matrix = np.asarray(self.homography, dtype=np.float64)
        with np.errstate(all="ignore"):
            determinant = float(np.linalg.det(matrix))
        if not math.isfinite(determinant) or abs(determinant) < _MIN_ABS_DETERMINANT:
            raise ValueError(
                f"ground.homography is singular (determinant {determinant:g}); run "
                "`sitlab-calibrate ground` again with points spread over the ground"
            )
        self._check_points(matrix)
        return self

    def _check_counts(self) -> None:
        count = len(self.image_points)
        if len(self.world_points) != count:
            raise ValueError(
                f"ground has {count} image_points but {len(self.world_points)} "
                "world_points; each image point needs its world point"
            )
        if self.wgs84_points is not None and len(self.wgs84_points) != count:
            raise ValueError(
                f"ground has {count} image_points but {len(self.wgs84_points)} "
                "wgs84_points"
            )
        if self.errors_m is not None and len(self.errors_m) != count:
            raise ValueError(
                f"ground has {count} image_points but {len(self.errors_m)} "
                "errors_m; run `sitlab-calibrate ground` again"
            )
        if (self.wgs84_points is None) != (self.origin_wgs84 is None):
            raise ValueError(
                "ground.wgs84_points and ground.origin_wgs84 go together; set both "
                "or neither"
            )

    def _check_resolution(self) -> None:
        width, height = self.resolution
        if width <= 0 or height <= 0:
            raise ValueError(
                f"ground.resolution [{width}, {height}] must be two positive "
                "numbers, the width and height of the snapshot the points were "
                "marked on"
            )
        for index, (x, y) in enumerate(self.image_points):
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"ground.image_points {index + 1} ({x:g}, {y:g}) is outside the "
                    f"{width}x{height} picture of ground.resolution; run "
                    "`sitlab-calibrate ground` again on a snapshot of this camera"
                )

    def _check_points(self, matrix: npt.NDArray[np.float64]) -> None:
        image = np.asarray(self.image_points, dtype=np.float64)
        world = np.asarray(self.world_points, dtype=np.float64)
        errors = None if self.errors_m is None else np.asarray(self.errors_m)
        try:
            check_point_set(world, "world", DUPLICATE_M)
            # Lens-corrected points are checked against the homography by the
            # ground plane, which has the lens section to undistort them.
            if not self.lens_corrected:
                check_point_set(image, "image", DUPLICATE_PX)
                check_horizon(matrix, image)
                check_match(matrix, image, world, errors)
        except PointSetError as error:
            raise ValueError(str(error)) from None


class SpeedConfig(_Strict):
    """Measurement of track speeds in km/h on the calibrated ground plane."""

    method: Literal["window", "kalman"] = Field(
        default="window",
        description=(
            "'window': straight-line distance of the ground point over `window_s`, "
            "steady but late after braking; 'kalman': the tracker's velocity "
            "mapped to the ground, immediate but noisy at low frame rates."
        ),
    )
    window_s: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description=(
            "Length of the displacement window in seconds. Longer smooths detector "
            "jitter but lags behind speed changes and underestimates curved paths."
        ),
    )
    min_span_s: float = Field(
        default=0.5,
        gt=0,
        description=(
            "A windowed speed is reported once the track's samples span this "
            "long; at most `window_s`. Lower reports speeds of short tracks sooner "
            "and noisier."
        ),
    )

    @model_validator(mode="after")
    def _span_within_window(self) -> SpeedConfig:
        if self.min_span_s > self.window_s:
            raise ValueError(
                f"speed.min_span_s={self.min_span_s:g} is longer than "
                f"speed.window_s={self.window_s:g}; use a value up to window_s"
            )
        return self


class TamperingConfig(_Strict):
    """The reference view that tampering detection compares the camera with."""

    reference_frame: Path = Field(
        description=(
            "Greyscale PNG of the empty scene taken by `sitlab-calibrate check`, "
            "relative to the config file."
        )
    )
    focus: float | None = Field(
        default=None,
        ge=0,
        description="Variance of the Laplacian of the reference frame (sharpness).",
    )
    mean_luma: float | None = Field(
        default=None, ge=0, le=255, description="Mean grey level of the reference."
    )
    taken_at: str | None = Field(
        default=None, description="UTC time the reference frame was taken, ISO 8601."
    )
