"""Lens distortion removal for anchor points on the node.

Only points are undistorted, never whole frames: the detector works on the
raw picture, and the few anchor points of each frame are corrected before
they are mapped to the ground plane. That costs microseconds per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.config_calibration import LensConfig

FloatArray = npt.NDArray[np.float64]


class LensError(ValueError):
    """Lens parameters that cannot be used for the stream at hand."""


@dataclass(frozen=True, slots=True, eq=False)
class LensModel:
    """A calibrated pinhole camera with OpenCV distortion coefficients.

    Attributes:
        camera_matrix: 3x3 intrinsics in pixels of `resolution_wh`.
        dist_coeffs: OpenCV distortion coefficients (4 to 14 values).
        resolution_wh: width and height the intrinsics belong to.
    """

    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    resolution_wh: tuple[int, int]

    @classmethod
    def from_config(cls, config: LensConfig) -> LensModel:
        """Build the model from the config's `lens` section."""
        return cls(
            camera_matrix=np.asarray(config.camera_matrix, dtype=np.float64),
            dist_coeffs=np.asarray(config.dist_coeffs, dtype=np.float64),
            resolution_wh=(int(config.resolution[0]), int(config.resolution[1])),
        )

    def for_stream(self, resolution_wh: tuple[int, int]) -> LensModel:
        """Return the model for a stream scaled to `resolution_wh`.

        Scaling keeps the distortion coefficients, which are defined on
        normalised coordinates, and scales focal lengths and principal point.

        Raises:
            LensError: when the stream's aspect ratio differs from the
                calibration's, which means a crop, not a scale, and the
                intrinsics no longer apply.
        """
        if resolution_wh == self.resolution_wh:
            return self
        width, height = self.resolution_wh
        scale_x = resolution_wh[0] / width
        scale_y = resolution_wh[1] / height
        if abs(scale_x - scale_y) > 0.01 * max(scale_x, scale_y):
            raise LensError(
                f"the lens was calibrated at {width}x{height} but the stream is "
                f"{resolution_wh[0]}x{resolution_wh[1]}, a different aspect ratio "
                "(a crop); run `sitlab-calibrate lens` at the stream's resolution"
            )
        matrix = self.camera_matrix.copy()
        matrix[0, :] *= scale_x
        matrix[1, :] *= scale_y
        return LensModel(matrix, self.dist_coeffs, resolution_wh)

    def undistort_points(
        self, points_xy: FloatArray | Sequence[Sequence[float]]
    ) -> FloatArray:
        """Map distorted pixel points to where an ideal pinhole would see them.

        Args:
            points_xy: (N, 2) pixel coordinates in the picture.

        Returns:
            (N, 2) pixel coordinates of the same camera matrix without
            distortion.
        """
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 1, 2)
        if points.shape[0] == 0:
            return np.zeros((0, 2), dtype=np.float64)
        undistorted = cv2.undistortPoints(
            points, self.camera_matrix, self.dist_coeffs, P=self.camera_matrix
        )
        return np.asarray(undistorted, dtype=np.float64).reshape(-1, 2)

    def distort_points(
        self, points_xy: FloatArray | Sequence[Sequence[float]]
    ) -> FloatArray:
        """Map ideal pinhole pixel points to the distorted picture (for drawing)."""
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        if points.shape[0] == 0:
            return np.zeros((0, 2), dtype=np.float64)
        inverse = np.linalg.inv(self.camera_matrix)
        homogeneous = np.hstack([points, np.ones((len(points), 1))])
        rays = (inverse @ homogeneous.T).T
        object_points = np.hstack([rays[:, :2], np.ones((len(points), 1))])
        projected, _ = cv2.projectPoints(
            object_points.reshape(-1, 1, 3),
            np.zeros(3),
            np.zeros(3),
            self.camera_matrix,
            self.dist_coeffs,
        )
        return np.asarray(projected, dtype=np.float64).reshape(-1, 2)
