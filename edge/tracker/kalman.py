"""Constant-velocity Kalman filter on boxes, batched over tracks.

The state of a box is `cx, cy, w, h, vx, vy, vw, vh`: centre, width and
height in pixels and their rates in pixels per second. Predictions take the
real time between frames, so irregular frame spacing and frames without
detection are handled. Width and height are filtered directly (as in
BoT-SORT), not the aspect ratio, so that `vw` and `vh` share units with
`vx` and `vy`.

The noise weights (1/20 and 1/160 of the box size, twice and ten times that
at birth) are those of the DeepSORT and ByteTrack filters, which step once
per frame. Here they apply per 1/30 s step, the frame rate of most MOT
benchmark videos, and scale with the elapsed time, so the motion model does
not change with the frame rate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

STATE_SIZE = 8
MEASUREMENT_SIZE = 4
REFERENCE_STEP_S = 1.0 / 30.0
# Standard deviations relative to the box size, per reference step.
POSITION_WEIGHT = 1.0 / 20.0
VELOCITY_WEIGHT = 1.0 / 160.0
# Box sides never shrink below this in a prediction, so IoU stays defined.
MIN_SIDE_PX = 1.0


def xyxy_to_measurement(xyxy: Array) -> Array:
    """Convert (N, 4) `xyxy` boxes to (N, 4) `cx, cy, w, h` measurements."""
    width = xyxy[:, 2] - xyxy[:, 0]
    height = xyxy[:, 3] - xyxy[:, 1]
    return np.stack(
        [xyxy[:, 0] + width / 2, xyxy[:, 1] + height / 2, width, height], axis=1
    )


def state_to_xyxy(mean: Array) -> Array:
    """Convert (N, 8) states to (N, 4) `xyxy` boxes with sides of at least 1 px."""
    half_width = np.maximum(mean[:, 2], MIN_SIDE_PX) / 2
    half_height = np.maximum(mean[:, 3], MIN_SIDE_PX) / 2
    return np.stack(
        [
            mean[:, 0] - half_width,
            mean[:, 1] - half_height,
            mean[:, 0] + half_width,
            mean[:, 1] + half_height,
        ],
        axis=1,
    )


def _side_scales(sizes: Array) -> Array:
    """Return (N, 4) per-coordinate scales `w, h, w, h` from (N, 2) sizes."""
    sides = np.maximum(sizes, MIN_SIDE_PX)
    return np.concatenate([sides, sides], axis=1)


def initiate(measurement: Array) -> tuple[Array, Array]:
    """Start filters from (N, 4) measurements.

    Args:
        measurement: `cx, cy, w, h` rows in pixels.

    Returns:
        Means (N, 8) with zero velocity and covariances (N, 8, 8) that leave
        the velocity free to move fast during the first updates.
    """
    count = measurement.shape[0]
    mean = np.zeros((count, STATE_SIZE))
    mean[:, :MEASUREMENT_SIZE] = measurement
    scales = _side_scales(measurement[:, 2:4])
    position_std = 2 * POSITION_WEIGHT * scales
    velocity_std = 10 * VELOCITY_WEIGHT * scales / REFERENCE_STEP_S
    variances = np.concatenate([position_std, velocity_std], axis=1) ** 2
    covariance = np.zeros((count, STATE_SIZE, STATE_SIZE))
    diagonal = np.arange(STATE_SIZE)
    covariance[:, diagonal, diagonal] = variances
    return mean, covariance


def predict(mean: Array, covariance: Array, dt_s: float) -> tuple[Array, Array]:
    """Advance (N, 8) means and (N, 8, 8) covariances by `dt_s` seconds.

    Process noise grows linearly with the elapsed time, so the velocity
    variance after one 0.2 s step equals the one after two 0.1 s steps.
    """
    if dt_s <= 0 or mean.shape[0] == 0:
        return mean, covariance
    transition = np.eye(STATE_SIZE)
    transition[:MEASUREMENT_SIZE, MEASUREMENT_SIZE:] = np.eye(MEASUREMENT_SIZE) * dt_s
    steps = dt_s / REFERENCE_STEP_S
    scales = _side_scales(mean[:, 2:4])
    position_std = POSITION_WEIGHT * scales
    velocity_std = VELOCITY_WEIGHT * scales / REFERENCE_STEP_S
    variances = np.concatenate([position_std, velocity_std], axis=1) ** 2 * steps
    new_mean = mean @ transition.T
    new_covariance = transition @ covariance @ transition.T
    diagonal = np.arange(STATE_SIZE)
    new_covariance[:, diagonal, diagonal] += variances
    return new_mean, new_covariance


def update(mean: Array, covariance: Array, measurement: Array) -> tuple[Array, Array]:
    """Correct (N, 8) states with (N, 4) `cx, cy, w, h` measurements."""
    if mean.shape[0] == 0:
        return mean, covariance
    scales = _side_scales(mean[:, 2:4])
    noise = (POSITION_WEIGHT * scales) ** 2
    innovation_cov = covariance[:, :MEASUREMENT_SIZE, :MEASUREMENT_SIZE].copy()
    diagonal = np.arange(MEASUREMENT_SIZE)
    innovation_cov[:, diagonal, diagonal] += noise
    # Both matrices are symmetric, so K^T = S^-1 H P and a solve replaces
    # the explicit inverse.
    projected = covariance[:, :MEASUREMENT_SIZE, :]
    gain = np.linalg.solve(innovation_cov, projected).transpose(0, 2, 1)
    innovation = measurement - mean[:, :MEASUREMENT_SIZE]
    new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    new_covariance = covariance - gain @ projected
    return new_mean, new_covariance
