"""Cost of the node's speed stage: ground speeds of many tracks per frame.

Usage: python bench/speeds.py [--frames 500] [--tracks 10 50 200]

Tracks drive along the calibrated road of
firmware-config/examples/road-speed.yaml at 20-80 km/h, 25 frames per
second, and `TrackSpeeds.update` is timed per frame for both speed methods.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.config import load_config
from edge.ground import GroundPlane, SpeedMethod, TrackSpeeds
from edge.types import Frame, Track, TrackedFrame

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "firmware-config/examples/road-speed.yaml"
)
FPS = 25.0


def _frames(plane: GroundPlane, tracks: int, frames: int) -> list[TrackedFrame]:
    """Return frames of tracks driving north along the road at random speeds."""
    rng = random.Random(7)
    to_image = np.linalg.inv(plane.homography)
    starts = [(rng.uniform(-4.5, 4.5), rng.uniform(0.0, 2.0)) for _ in range(tracks)]
    speeds_mps = [rng.uniform(20, 80) / 3.6 for _ in range(tracks)]
    image = np.zeros((2, 2, 3), np.uint8)
    result = []
    for index in range(frames):
        pts_s = index / FPS
        drawn = []
        for track_id, ((east, north), speed) in enumerate(
            zip(starts, speeds_mps, strict=True)
        ):
            travelled = math.fmod(north + speed * pts_s, 10.0)
            x, y, w = to_image @ np.array([east, travelled, 1.0])
            x, y = x / w, y / w
            drawn.append(
                Track(
                    track_id=track_id,
                    xyxy=(x - 20, y - 40, x + 20, y),
                    class_id=2,
                    confidence=0.9,
                    confirmed=True,
                    detected=True,
                    velocity_xy=(0.0, -speed * 20),
                )
            )
        frame = Frame(
            image=image, index=index, pts_s=pts_s, captured_at=datetime.now(UTC)
        )
        result.append(TrackedFrame(frame=frame, tracks=drawn))
    return result


def main() -> None:
    """Print the median cost per frame and per track for each track count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--tracks", type=int, nargs="+", default=[10, 50, 200])
    args = parser.parse_args()
    config = load_config(EXAMPLE)
    assert config.ground is not None
    plane = GroundPlane.from_config(config.ground).for_stream((1280, 720))
    print(
        f"python {platform.python_version()}, {platform.machine()}, {args.frames} frames"
    )
    for tracks in args.tracks:
        frames = _frames(plane, tracks, args.frames)
        for method in SpeedMethod:
            speeds = TrackSpeeds(plane, method=method)
            times = []
            for tracked in frames:
                started = time.perf_counter()
                speeds.update(tracked)
                times.append(time.perf_counter() - started)
            median_us = statistics.median(times) * 1e6
            print(
                f"{tracks:4d} tracks, {method.value:6s}: {median_us:8.1f} us per frame, "
                f"{median_us / tracks:5.1f} us per track (median)"
            )


if __name__ == "__main__":
    main()
