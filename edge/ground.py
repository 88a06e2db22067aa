"""Ground-plane mapping on the node: image points to metres, track speeds in km/h.

A homography maps a point of the picture that lies on the ground (a bottom-
centre anchor, where a person's feet or a wheel touch the road) to metres in
a local east-north frame. It is exact for a flat ground and a lens without
distortion; with a `lens` section the anchor is undistorted first. Points on
or above the horizon have no ground position and map to NaN.

Speeds come either from the tracker's Kalman velocity (instantaneous, noisy
at low frame rates) or from the straight-line displacement of the track over
a time window (default 1 s, steadier). Both are in km/h.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edge.config_calibration import (
    MAX_SPEED_KMH,
    GroundConfig,
    LensConfig,
    SpeedConfig,
)
from edge.ground_points import (
    DUPLICATE_PX,
    PointSetError,
    check_horizon,
    check_match,
    check_point_set,
)
from edge.lens import LensModel
from edge.types import Anchor, Track, TrackedFrame

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

MPS_TO_KMH = 3.6
# The Kalman velocity is turned into ground metres by mapping a step of this
# many pixels along the velocity. The step is small enough for the local
# linearisation and large enough to stay clear of float rounding.
_STEP_PX = 0.5
DEFAULT_MAX_TRACKS = 4096
# Speeds above MAX_SPEED_KMH are dropped as faults; the warning about them is
# repeated at most once per this many stream seconds.
_IMPLAUSIBLE_LOG_INTERVAL_S = 60.0
# Largest difference of the width and height scale factors that still counts
# as the same aspect ratio (rounding of odd sizes such as 1366x768).
_ASPECT_TOLERANCE = 0.01


class GroundError(ValueError):
    """A ground plane that cannot be built or used."""


def same_aspect(a_wh: tuple[int, int], b_wh: tuple[int, int]) -> bool:
    """Tell whether two resolutions are scalings of one picture."""
    scale_x = a_wh[0] / b_wh[0]
    scale_y = a_wh[1] / b_wh[1]
    return abs(scale_x - scale_y) <= _ASPECT_TOLERANCE * max(scale_x, scale_y)


class SpeedMethod(StrEnum):
    """Source of a track's speed."""

    KALMAN = "kalman"
    WINDOW = "window"


@dataclass(frozen=True, slots=True, eq=False)
class GroundPlane:
    """Homography from image pixels to metres on a flat ground.

    Attributes:
        homography: 3x3 matrix from pixels of `resolution_wh` (after lens
            undistortion when `lens` is set) to metres.
        resolution_wh: width and height the homography's pixels belong to.
        lens: undistortion applied to points before the homography.
        ground_sign: sign of the homogeneous w of points on the visible
            ground; points with the other sign are beyond the horizon.
    """

    homography: FloatArray
    resolution_wh: tuple[int, int]
    lens: LensModel | None = None
    ground_sign: float = 1.0

    @classmethod
    def from_config(
        cls, ground: GroundConfig, lens: LensConfig | None = None
    ) -> GroundPlane:
        """Build the ground plane from the config's `ground` and `lens` sections.

        Raises:
            GroundError: when the ground points were lens-corrected but the
                config has no `lens` section, or when the homography puts a
                marked point beyond its horizon or does not match the points.
        """
        resolution = (int(ground.resolution[0]), int(ground.resolution[1]))
        model = None
        if ground.lens_corrected:
            if lens is None:
                raise GroundError(
                    "ground.lens_corrected is true but the config has no lens "
                    "section; run `sitlab-calibrate lens` or `sitlab-calibrate "
                    "ground` again"
                )
            model = LensModel.from_config(lens).for_stream(resolution)
        matrix = np.asarray(ground.homography, dtype=np.float64)
        points = np.asarray(ground.image_points, dtype=np.float64)
        if model is not None:
            points = model.undistort_points(points)
        world = np.asarray(ground.world_points, dtype=np.float64)
        errors = None if ground.errors_m is None else np.asarray(ground.errors_m)
        try:
            check_point_set(points, "image", DUPLICATE_PX)
            check_horizon(matrix, points)
            check_match(matrix, points, world, errors)
        except PointSetError as error:
            raise GroundError(f"ground: {error}") from None
        centroid = np.append(points.mean(axis=0), 1.0)
        sign = 1.0 if float((matrix @ centroid)[2]) > 0 else -1.0
        return cls(matrix, resolution, model, sign)

    def for_stream(self, resolution_wh: tuple[int, int]) -> GroundPlane:
        """Return the plane for a stream of `resolution_wh` (a scaled picture).

        Raises:
            GroundError: when the stream's aspect ratio differs from the
                snapshot's: the stream is cropped or stretched, so the marked
                points no longer sit where they were marked.
        """
        if resolution_wh == self.resolution_wh:
            return self
        width, height = self.resolution_wh
        scale_x = resolution_wh[0] / width
        scale_y = resolution_wh[1] / height
        if not same_aspect(resolution_wh, self.resolution_wh):
            raise GroundError(
                f"the ground plane was calibrated on a {width}x{height} snapshot but "
                f"the stream is {resolution_wh[0]}x{resolution_wh[1]}, a different "
                "aspect ratio; run `sitlab-calibrate ground` again on a snapshot of "
                "this stream"
            )
        to_reference = np.diag([1.0 / scale_x, 1.0 / scale_y, 1.0])
        lens = self.lens.for_stream(resolution_wh) if self.lens else None
        return GroundPlane(
            self.homography @ to_reference, resolution_wh, lens, self.ground_sign
        )

    def to_world(self, points_xy: FloatArray | Sequence[Sequence[float]]) -> FloatArray:
        """Map (N, 2) pixel points to (N, 2) metres; NaN beyond the horizon."""
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        if self.lens is not None:
            points = self.lens.undistort_points(points)
        homogeneous = np.hstack([points, np.ones((len(points), 1))])
        mapped = homogeneous @ self.homography.T
        w = mapped[:, 2:3] * self.ground_sign
        with np.errstate(divide="ignore", invalid="ignore"):
            world = mapped[:, :2] / mapped[:, 2:3]
        world[(w <= 0).ravel()] = np.nan
        return world

    def to_world_point(self, x: float, y: float) -> tuple[float, float]:
        """Map one pixel point to (east, north) metres; NaN beyond the horizon."""
        east, north = self.to_world([[x, y]])[0]
        return float(east), float(north)

    def distance_m(self, a_xy: Sequence[float], b_xy: Sequence[float]) -> float:
        """Return the ground distance in metres between two pixel points."""
        world = self.to_world([a_xy, b_xy])
        return float(np.hypot(*(world[1] - world[0])))

    def metres_per_pixel(self, point_xy: Sequence[float]) -> float:
        """Return the local ground scale at a pixel point, in metres per pixel.

        It is the geometric mean of the scales along x and y, so a rule can
        turn a distance in metres into pixels near that point. NaN beyond the
        horizon.
        """
        x, y = float(point_xy[0]), float(point_xy[1])
        world = self.to_world([[x, y], [x + _STEP_PX, y], [x, y + _STEP_PX]])
        along_x = float(np.hypot(*(world[1] - world[0]))) / _STEP_PX
        along_y = float(np.hypot(*(world[2] - world[0]))) / _STEP_PX
        return math.sqrt(along_x * along_y)

    def size_m(self, xyxy: tuple[float, float, float, float]) -> float:
        """Return the longer side of a box in metres, for size limits of rules.

        Both sides are scaled by the ground's metres per pixel along the
        image x axis at the box's bottom centre. That holds for an upright
        object standing there, because its height and width are both about
        square to the line of sight, unlike a distance along the ground.
        NaN when the bottom centre is beyond the horizon.
        """
        left, top, right, bottom = (float(value) for value in xyxy)
        centre_x = (left + right) / 2.0
        world = self.to_world([[centre_x, bottom], [centre_x + _STEP_PX, bottom]])
        metres_per_px = float(np.hypot(*(world[1] - world[0]))) / _STEP_PX
        return max(right - left, bottom - top) * metres_per_px

    def velocity_mps(
        self, point_xy: Sequence[float], velocity_px_s: Sequence[float]
    ) -> tuple[float, float]:
        """Map an image velocity at a point to an (east, north) ground velocity.

        Args:
            point_xy: where the object touches the ground, in pixels.
            velocity_px_s: its image velocity in pixels per second.

        Returns:
            Ground velocity in metres per second; NaN beyond the horizon.
        """
        vx, vy = float(velocity_px_s[0]), float(velocity_px_s[1])
        speed_px = math.hypot(vx, vy)
        if speed_px == 0.0:
            return 0.0, 0.0
        step_s = _STEP_PX / speed_px
        x, y = float(point_xy[0]), float(point_xy[1])
        world = self.to_world(
            [[x - vx * step_s, y - vy * step_s], [x + vx * step_s, y + vy * step_s]]
        )
        east, north = (world[1] - world[0]) / (2.0 * step_s)
        return float(east), float(north)

    def speed_kmh(
        self, point_xy: Sequence[float], velocity_px_s: Sequence[float]
    ) -> float:
        """Return the ground speed in km/h of an image velocity at a point.

        Suited to `Track.velocity_xy` at the track's anchor. NaN when the point
        is beyond the horizon.
        """
        east, north = self.velocity_mps(point_xy, velocity_px_s)
        return math.hypot(east, north) * MPS_TO_KMH


@dataclass(slots=True)
class _History:
    samples: deque[tuple[float, float, float]]
    speed_kmh: float | None = None


class TrackSpeeds:
    """Per-track ground speed in km/h, for speed incidents and reports.

    With `SpeedMethod.WINDOW` a track's speed is the straight-line distance
    between its oldest and newest detected anchor within `window_s`, divided
    by the time between them. It is reported once the samples span at least
    `min_span_s`. A longer window smooths detector jitter but lags behind
    braking and turns, and it underestimates the speed of an object that
    curves. With `SpeedMethod.KALMAN` the tracker's velocity at the anchor
    is mapped instead, which reacts at once but carries the filter's noise.

    Only frames where the track was detected are used: Kalman predictions on
    coasting frames are not measurements. A speed above `MAX_SPEED_KMH` is a
    measurement fault: it is counted in `implausible_count`, logged at most
    once a minute of stream time, and the track's speed becomes unknown.
    State is purged by `forget` and bounded by `max_tracks` (least recently
    seen dropped first).

    Args:
        ground: the ground plane at the stream's resolution.
        anchor: the box point that touches the ground, normally bottom centre.
        method: where the speed comes from.
        window_s: length of the displacement window in stream seconds.
        min_span_s: minimum time between the first and last sample before
            a windowed speed is reported.
        max_tracks: bound of the per-track state.
    """

    def __init__(
        self,
        ground: GroundPlane,
        *,
        anchor: Anchor = Anchor.BOTTOM_CENTER,
        method: SpeedMethod = SpeedMethod.WINDOW,
        window_s: float = 1.0,
        min_span_s: float = 0.5,
        max_tracks: int = DEFAULT_MAX_TRACKS,
    ) -> None:
        if window_s <= 0:
            raise GroundError(f"window_s is {window_s:g}; use a positive number")
        if not 0 < min_span_s <= window_s:
            raise GroundError(
                f"min_span_s is {min_span_s:g}; use a value in (0, window_s="
                f"{window_s:g}]"
            )
        self.ground = ground
        self.anchor = anchor
        self.method = method
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.max_tracks = max_tracks
        self._tracks: OrderedDict[int, _History] = OrderedDict()
        self.implausible_count = 0
        self._implausible_since_log = 0
        self._implausible_logged_s: float | None = None

    @classmethod
    def from_config(
        cls, ground: GroundPlane, speed: SpeedConfig | None = None
    ) -> TrackSpeeds:
        """Build the speed state for `ground` with the config's `speed` section.

        The anchor is always the bottom centre, the point of a box that
        touches the ground, whatever anchor the lines and zones use.
        """
        settings = speed or SpeedConfig()
        return cls(
            ground,
            method=SpeedMethod(settings.method),
            window_s=settings.window_s,
            min_span_s=settings.min_span_s,
        )

    def update(self, tracked: TrackedFrame) -> dict[int, float]:
        """Take one frame's tracks and return the speeds known after it.

        Returns:
            km/h per track id, for the tracks on this frame whose speed is
            known; tracks beyond the horizon or with too short a history are
            left out.
        """
        speeds: dict[int, float] = {}
        detector_ran = tracked.frame.detection_ran
        for track in tracked.tracks:
            speed = self._observe(track, tracked.frame.pts_s, detector_ran)
            if speed is not None and math.isfinite(speed):
                speeds[track.track_id] = speed
        self.forget(tracked.ended_track_ids)
        return speeds

    def speed_kmh(self, track_id: int) -> float | None:
        """Return the last known speed of a track, None when not known."""
        history = self._tracks.get(track_id)
        return history.speed_kmh if history else None

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the state of ended tracks."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    @property
    def tracked_count(self) -> int:
        """Number of tracks with state."""
        return len(self._tracks)

    def _observe(self, track: Track, pts_s: float, detector_ran: bool) -> float | None:
        history = self._history(track.track_id)
        if not (track.detected and detector_ran):
            return history.speed_kmh
        speed = self._measure(track, history, pts_s)
        if speed is None:
            return history.speed_kmh
        if speed > MAX_SPEED_KMH:
            self._drop_implausible(track.track_id, speed, pts_s)
            history.speed_kmh = None
            return None
        history.speed_kmh = speed
        return speed

    def _measure(self, track: Track, history: _History, pts_s: float) -> float | None:
        """Return the track's new speed on this frame, None when there is none."""
        x, y = self.anchor.point(track.xyxy)
        if self.method is SpeedMethod.KALMAN:
            return self.ground.speed_kmh((x, y), track.velocity_xy)
        east, north = self.ground.to_world_point(x, y)
        if not (math.isfinite(east) and math.isfinite(north)):
            return None
        samples = history.samples
        samples.append((pts_s, east, north))
        while samples and pts_s - samples[0][0] > self.window_s + 1e-9:
            samples.popleft()
        first_s, first_east, first_north = samples[0]
        span_s = pts_s - first_s
        if span_s < self.min_span_s - 1e-9:
            return None
        distance = math.hypot(east - first_east, north - first_north)
        return distance / span_s * MPS_TO_KMH

    def _drop_implausible(self, track_id: int, speed_kmh: float, pts_s: float) -> None:
        """Count a speed above the cap and warn about it at most once a minute."""
        self.implausible_count += 1
        self._implausible_since_log += 1
        last = self._implausible_logged_s
        if last is not None and pts_s - last < _IMPLAUSIBLE_LOG_INTERVAL_S:
            return
        logger.warning(
            "dropped %d speed(s) above %g km/h as measurement faults, the latest "
            "%.0f km/h of track %d at %.1f s; if this repeats, check the ground "
            "section with `sitlab-edge check-config` and run `sitlab-calibrate "
            "ground` again",
            self._implausible_since_log,
            MAX_SPEED_KMH,
            speed_kmh,
            track_id,
            pts_s,
        )
        self._implausible_logged_s = pts_s
        self._implausible_since_log = 0

    def _history(self, track_id: int) -> _History:
        history = self._tracks.get(track_id)
        if history is not None:
            self._tracks.move_to_end(track_id)
            return history
        if len(self._tracks) >= self.max_tracks:
            dropped, _ = self._tracks.popitem(last=False)
            logger.warning(
                "speed state full at %d tracks; dropped track %d, seen least "
                "recently (the tracker may not report ended tracks)",
                self.max_tracks,
                dropped,
            )
        history = _History(samples=deque())
        self._tracks[track_id] = history
        return history
