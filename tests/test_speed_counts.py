"""Crossing speeds in counts: ground plane, track speeds, line statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from edge.analytics import Analytics, SpeedStats
from edge.analytics.speed_stats import merge_speed_fields
from edge.config import NodeConfig, parse_config
from edge.ground import TrackSpeeds
from edge.messages import envelope, validate
from edge.outbox import merge_counts
from edge.scene import Scene
from edge.types import Frame, Track, TrackedFrame
from tests.support.ground_camera import RESOLUTION, ground_section, pixel

T0 = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
FPS = 10.0
CLASSES = ["person", "bicycle", "car"]
CAR = 2
# Cars drive east along north = 5 m, from the left edge of the picture to
# the right, and cross a line drawn at east = 0 after 9 m.
LANE_NORTH_M = 5.0
START_EAST_M = -9.0


def node_config(**extra: Any) -> NodeConfig:  # noqa: ANN401
    data: dict[str, Any] = {
        "site": "lab",
        "node": "cam-01",
        "source": {"uri": "clip.avi"},
        "model": {"path": "model.onnx"},
        "geometry": {"reference_resolution": list(RESOLUTION)},
        "lines": [
            {
                "name": "gate",
                "points": [list(pixel(0.0, 0.0)), list(pixel(0.0, 10.0))],
                "classes": ["car"],
            }
        ],
        **extra,
    }
    return parse_config(data)


def car_track(
    track_id: int,
    east_m: float,
    speed_kmh: float,
    scale: float,
    jitter_px: tuple[float, float] = (0.0, 0.0),
) -> Track:
    x, y = pixel(east_m, LANE_NORTH_M)
    # The Kalman velocity of the box, taken as the anchor's pixel velocity.
    ahead_x, ahead_y = pixel(east_m + 0.01, LANE_NORTH_M)
    metres_per_s = speed_kmh / 3.6
    velocity = (
        (ahead_x - x) / 0.01 * metres_per_s,
        (ahead_y - y) / 0.01 * metres_per_s,
    )
    x, y = (x + jitter_px[0]) * scale, (y + jitter_px[1]) * scale
    box = (x - 30 * scale, y - 40 * scale, x + 30 * scale, y)
    velocity_scaled = (velocity[0] * scale, velocity[1] * scale)
    return Track(track_id, box, CAR, 0.9, True, True, velocity_scaled)


def drive(
    config: NodeConfig,
    speeds_kmh: Sequence[float],
    stream_wh: tuple[int, int] = RESOLUTION,
    jitter_px: float = 0.0,
) -> list[dict[str, Any]]:
    """Drive one car per speed across the line, one after another.

    The frames go through the same steps as the node's frame loop: the
    scene at the stream's resolution, track speeds, then analytics. Box
    corners move by up to `jitter_px` calibration pixels at random, like
    detector noise.
    """
    rng = np.random.default_rng(11)
    scene = Scene.from_config(config, stream_wh)
    speeds = (
        TrackSpeeds.from_config(scene.ground, config.speed) if scene.ground else None
    )
    analytics = Analytics(
        scene.lines,
        scene.zones,
        reference=scene.reference,
        class_names=CLASSES,
        interval_s=60,
    )
    scale = stream_wh[0] / RESOLUTION[0]
    image = np.zeros((stream_wh[1], stream_wh[0], 3), np.uint8)
    t = 0.0
    for track_id, speed_kmh in enumerate(speeds_kmh, start=1):
        east = START_EAST_M
        while east <= -START_EAST_M:
            frame = Frame(image, round(t * FPS), t, T0 + timedelta(seconds=t))
            jitter = rng.uniform(-jitter_px, jitter_px, 2)
            car = car_track(track_id, east, speed_kmh, scale, (jitter[0], jitter[1]))
            tracked = TrackedFrame(frame, [car])
            if speeds is not None:
                tracked.speeds_kmh = speeds.update(tracked)
            assert analytics.update(tracked) == []
            east += speed_kmh / 3.6 / FPS
            t += 1.0 / FPS
        frame = Frame(image, round(t * FPS), t, T0 + timedelta(seconds=t))
        ended = TrackedFrame(frame, [], [track_id])
        if speeds is not None:
            ended.speeds_kmh = speeds.update(ended)
        analytics.update(ended)
    interval = analytics.flush()
    assert interval is not None
    payload = envelope("counts", "lab", "cam-01", 1) | interval.to_fields()
    validate(payload, "counts")
    return list(payload["lines"])


def gate_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    (row,) = [row for row in rows if row["line"] == "gate" and row["class"] == "car"]
    return row


SPEEDS_KMH = [30.0, 36.0, 42.0, 50.0, 61.0]


@pytest.mark.parametrize(
    ("speed", "stream_wh", "jitter_px"),
    [
        ({}, RESOLUTION, 0.0),
        ({"method": "kalman"}, RESOLUTION, 0.0),
        ({"window_s": 0.6, "min_span_s": 0.3}, RESOLUTION, 0.0),
        ({}, (640, 360), 0.0),
        ({"method": "kalman"}, (1920, 1080), 0.0),
        ({}, RESOLUTION, 2.0),
    ],
    ids=[
        "window",
        "kalman",
        "short-window",
        "half-stream",
        "kalman-full-hd",
        "window-2px-jitter",
    ],
)
def test_crossing_speeds_within_two_percent(
    speed: dict[str, Any], stream_wh: tuple[int, int], jitter_px: float
) -> None:
    config = node_config(ground=ground_section(), speed=speed)

    row = gate_row(drive(config, SPEEDS_KMH, stream_wh, jitter_px))

    stats = row["speed_in"] if "speed_in" in row else row["speed_out"]
    assert row["in"] + row["out"] == len(SPEEDS_KMH)
    assert stats["n"] == len(SPEEDS_KMH)
    assert stats["mean_kmh"] == pytest.approx(np.mean(SPEEDS_KMH), rel=0.02)
    assert stats["p85_kmh"] == pytest.approx(np.percentile(SPEEDS_KMH, 85), rel=0.02)
    assert stats["max_kmh"] == pytest.approx(max(SPEEDS_KMH), rel=0.02)


def test_single_car_at_36_kmh() -> None:
    config = node_config(ground=ground_section())

    row = gate_row(drive(config, [36.0]))

    assert row["in"] == 1
    assert row["speed_in"]["n"] == 1
    assert row["speed_in"]["max_kmh"] == pytest.approx(36.0, rel=0.02)
    assert "speed_out" not in row


def test_no_ground_plane_no_speed_fields() -> None:
    row = gate_row(drive(node_config(), [36.0]))

    assert row["in"] == 1
    assert "speed_in" not in row
    assert "speed_out" not in row


def test_crossing_before_speed_known_is_not_in_stats() -> None:
    # A window that needs 3 s of samples: the car crosses after 0.9 s, while
    # its speed is still unknown, so it counts without a speed.
    config = node_config(
        ground=ground_section(), speed={"window_s": 5.0, "min_span_s": 3.0}
    )

    row = gate_row(drive(config, [36.0]))

    assert row["in"] == 1
    assert "speed_in" not in row


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([36.0], SpeedStats(1, 36.0, 36.0, 36.0)),
        ([10.0, 20.0], SpeedStats(2, 15.0, 18.5, 20.0)),
        ([float("nan"), 40.0], SpeedStats(1, 40.0, 40.0, 40.0)),
        ([], None),
    ],
    ids=["one", "two-interpolated", "nan-skipped", "empty"],
)
def test_speed_stats_from_samples(
    samples: list[float], expected: SpeedStats | None
) -> None:
    assert SpeedStats.from_samples(samples) == expected


def test_merged_speed_stats_drop_p85() -> None:
    merged = merge_speed_fields(
        [
            {"n": 1, "mean_kmh": 30.0, "p85_kmh": 30.0, "max_kmh": 30.0},
            {"n": 3, "mean_kmh": 50.0, "p85_kmh": 60.0, "max_kmh": 70.0},
        ]
    )

    assert merged == {"n": 4, "mean_kmh": 45.0, "max_kmh": 70.0}


def test_outbox_merge_keeps_speed_stats() -> None:
    def counts(minute: int, row: dict[str, Any]) -> dict[str, Any]:
        start = T0 + timedelta(minutes=minute)
        return envelope("counts", "lab", "cam-01", minute + 1) | {
            "interval_start": start.isoformat().replace("+00:00", "Z"),
            "interval_end": (start + timedelta(minutes=1))
            .isoformat()
            .replace("+00:00", "Z"),
            "lines": [{"line": "gate", "class": "car", **row}],
            "zones": [],
        }

    stats = {"n": 2, "mean_kmh": 40.0, "p85_kmh": 44.0, "max_kmh": 45.0}
    merged = merge_counts(
        [
            counts(0, {"in": 2, "out": 0, "speed_in": stats}),
            counts(1, {"in": 1, "out": 1}),
            counts(2, {"in": 2, "out": 0, "speed_in": {**stats, "max_kmh": 80.0}}),
        ]
    )

    validate(merged, "counts")
    (row,) = merged["lines"]
    assert row["in"] == 5
    assert row["speed_in"]["n"] == 4
    assert row["speed_in"]["max_kmh"] == 80.0
    assert "p85_kmh" not in row["speed_in"]
    assert "speed_out" not in row
