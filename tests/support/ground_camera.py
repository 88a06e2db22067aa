"""A pinhole camera over flat ground, for tests that need a known ground plane.

The camera hangs 9 m above the ground, 6 m south of the local origin, and
looks north, tilted 40 degrees down. Ground points are (east, north) in
metres; `project` gives their pixels in a 1280x720 picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from calibration.ground import PointPair, build_ground
from edge.config_calibration import GroundConfig
from edge.ground import GroundPlane
from edge.types import Frame, Track, TrackedFrame

RESOLUTION = (1280, 720)
_CAMERA = np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
_TILT = math.radians(40)
_CENTRE = np.array([0.0, -6.0, 9.0])
_ROTATION = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, -math.sin(_TILT), -math.cos(_TILT)],
        [0.0, math.cos(_TILT), -math.sin(_TILT)],
    ]
)
# Marked points of the calibration, spread over the visible ground.
MARKERS = [(-5.0, 0.0), (5.0, 0.0), (5.0, 10.0), (-5.0, 10.0), (0.0, 5.0)]


def project(world_en: Sequence[Sequence[float]]) -> np.ndarray:
    """Return the (N, 2) pixels of ground points (east, north) in metres."""
    points = np.asarray(world_en, dtype=float).reshape(-1, 2)
    on_ground = np.hstack([points, np.zeros((len(points), 1))])
    camera = (on_ground - _CENTRE) @ _ROTATION.T
    pixels = camera @ _CAMERA.T
    return pixels[:, :2] / pixels[:, 2:3]


def pixel(east: float, north: float) -> tuple[float, float]:
    """Return the pixel of one ground point."""
    x, y = project([(east, north)])[0]
    return float(x), float(y)


def ground_config() -> GroundConfig:
    """Return the `ground` section that `sitlab-calibrate ground` would write."""
    pairs = [PointPair(pixel(east, north), (east, north)) for east, north in MARKERS]
    _, config = build_ground(pairs, RESOLUTION)
    return config


def ground_section() -> dict[str, Any]:
    """Return the `ground` section as parsed YAML data."""
    return ground_config().model_dump(mode="json")


def ground_plane() -> GroundPlane:
    """Return the node's ground plane at the calibration resolution."""
    return GroundPlane.from_config(ground_config())


def tracked_at(
    pts_s: float,
    x: float,
    y: float,
    *,
    track_id: int = 1,
    velocity: tuple[float, float] = (0.0, 0.0),
) -> TrackedFrame:
    """Return a frame with one detected track whose bottom centre is (x, y)."""
    frame = Frame(
        image=np.zeros((2, 2, 3), np.uint8),
        index=0,
        pts_s=pts_s,
        captured_at=datetime.now(UTC),
    )
    track = Track(
        track_id=track_id,
        xyxy=(x - 15, y - 60, x + 15, y),
        class_id=2,
        confidence=0.9,
        confirmed=True,
        detected=True,
        velocity_xy=velocity,
    )
    return TrackedFrame(frame=frame, tracks=[track])
