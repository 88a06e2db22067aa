"""Wrong ground-plane input: swapped points, bad sections, wrong units, bad sizes."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from calibration.cli import main as calibrate
from calibration.ground import (
    GroundCalibrationError,
    PointPair,
    build_ground,
    fit_homography,
)
from edge.config_calibration import MAX_SPEED_KMH, GroundConfig
from edge.ground import GroundError, SpeedMethod, TrackSpeeds
from edge.ground_points import is_mirrored
from tests.support.ground_camera import (
    RESOLUTION,
    ground_plane,
    ground_section,
    pixel,
    project,
    tracked_at,
)

# The trial's campus points with points 3 and 4 paired the wrong way round.
TRIAL_IMAGE = [(100.0, 500.0), (700.0, 500.0), (200.0, 300.0), (400.0, 300.0)]
TRIAL_WORLD = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
SQUARE = [(-5.0, 0.0), (5.0, 0.0), (5.0, 10.0), (-5.0, 10.0)]


def _pairs(image: list[tuple[float, float]], world: list[tuple[float, float]]) -> list:
    return [PointPair(i, w) for i, w in zip(image, world, strict=True)]


def _camera_pairs(order: list[int]) -> list[PointPair]:
    """Pair the camera's square with its world points taken in `order`."""
    image = [pixel(*point) for point in SQUARE]
    return _pairs(image, [SQUARE[index] for index in order])


@pytest.mark.parametrize(
    ("pairs", "resolution", "message"),
    [
        (
            _pairs(TRIAL_IMAGE, TRIAL_WORLD),
            (768, 576),
            r"points 3 \(200, 300\) and 4 \(400, 300\) beyond its horizon",
        ),
        (_camera_pairs([0, 1, 3, 2]), RESOLUTION, "beyond its horizon"),
        (_camera_pairs([1, 0, 2, 3]), RESOLUTION, "beyond its horizon"),
    ],
    ids=["trial-3-4-swapped", "camera-3-4-swapped", "camera-1-2-swapped"],
)
def test_swapped_points_rejected(
    pairs: list[PointPair], resolution: tuple[int, int], message: str
) -> None:
    with pytest.raises(GroundCalibrationError, match=message) as caught:
        build_ground(pairs, resolution)

    assert "probably in the wrong order" in str(caught.value)


@pytest.mark.parametrize(
    ("count", "threshold", "message"),
    [
        (7, float("nan"), "--ransac-threshold-m nan is invalid"),
        (7, -1.0, "--ransac-threshold-m -1 is invalid"),
        (7, 0.0, "--ransac-threshold-m 0 is invalid"),
        (5, 0.3, r"world point 2 \(nan, 0\) is not a finite number"),
        (7, 0.3, r"world point 2 \(nan, 0\) is not a finite number"),
    ],
    ids=["threshold-nan", "threshold-negative", "threshold-zero", "nan-5", "nan-7"],
)
def test_fit_rejects_bad_numbers(count: int, threshold: float, message: str) -> None:
    world = np.array(
        [[-5, 0], [5, 0], [5, 10], [-5, 10], [-3, 2], [3, 8], [2, 1]], dtype=float
    )[:count]
    image = project(world)
    if "nan" in message and "threshold" not in message:
        world[1, 0] = math.nan

    with pytest.raises(GroundCalibrationError, match=message):
        fit_homography(image, world, ransac_threshold_m=threshold)


@pytest.mark.parametrize(
    ("world", "message"),
    [
        (SQUARE, r"point 1 \(-5, 0\) is \d+ km from the points' centroid"),
        ([(50.0, 14.0), (50.0, 14.1), (50.1, 14.1), (50.1, 14.0)], "drop --wgs84"),
    ],
    ids=["metres-as-degrees", "ten-km-apart"],
)
def test_wgs84_far_points_rejected(world: list, message: str) -> None:
    image = [pixel(*point) for point in SQUARE]

    with pytest.raises(GroundCalibrationError, match=message):
        build_ground(_pairs(image, world), RESOLUTION, wgs84=True)


def _section(**changes: Any) -> dict[str, Any]:  # noqa: ANN401
    section = ground_section()
    section.update(changes)
    return section


def _swapped_section() -> dict[str, Any]:
    _, config = build_ground(_camera_pairs([0, 1, 2, 3]), RESOLUTION)
    world = [list(point) for point in config.world_points]
    world[2], world[3] = world[3], world[2]
    return _section(
        image_points=[list(p) for p in config.image_points],
        world_points=world,
        homography=cv2.getPerspectiveTransform(
            np.array(config.image_points, np.float32), np.array(world, np.float32)
        ).tolist(),
        errors_m=[0.0] * 4,
    )


IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (_section(resolution=[0, 720]), r"ground.resolution \[0, 720\] must be two"),
        (_section(resolution=[-1280, 720]), r"\[-1280, 720\] must be two positive"),
        (
            _section(image_points=[[4000, 500], *ground_section()["image_points"][1:]]),
            r"image_points 1 \(4000, 500\) is outside the 1280x720 picture",
        ),
        (
            _section(
                image_points=[
                    [100, 600],
                    [400, 600],
                    [700, 600],
                    [900, 600],
                    [600, 300],
                ]
            ),
            r"image points are \(nearly\) collinear",
        ),
        (_section(homography=IDENTITY), "homography does not match the points"),
        (_section(world_points=[[math.nan, 0], *SQUARE[1:], [0, 5]]), "finite number"),
        (_section(homography=[[math.nan, 0, 0], *IDENTITY[1:]]), "finite number"),
        (_section(homography=[[math.inf, 0, 0], *IDENTITY[1:]]), "finite number"),
        (_section(errors_m=[-0.1, 0, 0, 0, 0]), "greater than or equal to 0"),
        (_section(errors_m=[0.0, 0.0]), "5 image_points but 2 errors_m"),
        (_swapped_section(), "beyond its horizon"),
    ],
    ids=[
        "resolution-zero",
        "resolution-negative",
        "point-outside",
        "collinear-image-points",
        "identity-homography",
        "nan-world-point",
        "nan-homography",
        "inf-homography",
        "negative-error",
        "error-count",
        "swapped-points",
    ],
)
def test_ground_section_rejected(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GroundConfig.model_validate(section)


def test_ground_section_from_calibration_accepted() -> None:
    assert GroundConfig.model_validate(ground_section()).resolution == RESOLUTION


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ((768, 576), "calibrated on a 1280x720 snapshot but the stream is 768x576"),
        ((1280, 1024), "a different aspect ratio; run `sitlab-calibrate ground`"),
    ],
    ids=["4-3-stream", "5-4-stream"],
)
def test_ground_plane_rejects_other_aspect(
    stream: tuple[int, int], message: str
) -> None:
    with pytest.raises(GroundError, match=message):
        ground_plane().for_stream(stream)


@pytest.mark.parametrize(
    "stream", [(640, 360), (1920, 1080), (1366, 768)], ids=["half", "fhd", "wxga"]
)
def test_ground_plane_scales_same_aspect(stream: tuple[int, int]) -> None:
    assert ground_plane().for_stream(stream).resolution_wh == stream


@pytest.mark.parametrize(
    ("speed_mps", "reported"),
    [(10.0, True), (MAX_SPEED_KMH / 3.6 * 1.5, False), (1000.0, False)],
    ids=["36-kmh", "750-kmh", "3600-kmh"],
)
def test_speeds_above_cap_are_unknown(
    speed_mps: float, reported: bool, caplog: pytest.LogCaptureFixture
) -> None:
    speeds = TrackSpeeds(ground_plane(), method=SpeedMethod.WINDOW)
    results: dict[int, float] = {}
    with caplog.at_level(logging.WARNING, logger="edge.ground"):
        for step in range(10):
            # Move east along north = 5 m, out of the picture when fast.
            east = -5.0 + speed_mps * step / 10
            results = speeds.update(
                tracked_at(step / 10, *pixel(east, 5.0), track_id=7)
            )

    assert (7 in results) is reported
    assert (speeds.speed_kmh(7) is not None) is reported
    assert (speeds.implausible_count > 0) is not reported
    assert (len(caplog.records) == 1) is not reported


def test_implausible_speeds_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    speeds = TrackSpeeds(ground_plane(), method=SpeedMethod.WINDOW)
    with caplog.at_level(logging.WARNING, logger="edge.ground"):
        for step in range(1200):
            # 300 m/s east for two minutes of stream at 10 fps.
            speeds.update(tracked_at(step / 10, *pixel(30.0 * step, 5.0), track_id=7))

    assert speeds.implausible_count > 1000
    assert len(caplog.records) == 2
    assert "above 500 km/h" in caplog.records[0].getMessage()


CONFIG = """\
site: lab
node: cam-01
source:
  uri: clip.avi
model:
  path: model.onnx
geometry:
  reference_resolution: [{width}, {height}]
"""


def _setup(
    tmp_path: Path, reference: tuple[int, int], snapshot: tuple[int, int]
) -> tuple[Path, Path]:
    config = tmp_path / "node.yaml"
    config.write_text(CONFIG.format(width=reference[0], height=reference[1]))
    png = tmp_path / "snapshot.png"
    cv2.imwrite(str(png), np.zeros((snapshot[1], snapshot[0], 3), np.uint8))
    return config, png


def _point_args(world: list[tuple[float, float]]) -> list[str]:
    args = []
    for east, north in world:
        x, y = pixel(east, north)
        args += ["--point", f"{x:.2f},{y:.2f}={east:g},{north:g}"]
    return args


def test_cli_rejects_snapshot_of_other_aspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, png = _setup(tmp_path, (768, 576), RESOLUTION)

    code = calibrate(
        [
            "ground",
            "--config",
            str(config),
            "--snapshot",
            str(png),
            *_point_args(SQUARE),
        ]
    )

    assert code == 1
    assert (
        "is 1280x720 but geometry.reference_resolution is 768x576"
        in capsys.readouterr().err
    )
    assert "ground" not in config.read_text()


@pytest.mark.parametrize(
    ("world", "noise_m", "verdict", "stored"),
    [
        ([*SQUARE, (0.0, 5.0)], 0.0, "good", True),
        ([*SQUARE, (1.0, 7.5)], 0.0, "good", True),
        ([*SQUARE, (1.0, 7.5)], 0.2, "redo", False),
        (SQUARE, 0.0, "unchecked", True),
    ],
    ids=["centre-point", "off-diagonal", "mismeasured", "four-points"],
)
def test_cli_prints_verdict(  # noqa: PLR0917
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    world: list[tuple[float, float]],
    noise_m: float,
    verdict: str,
    stored: bool,
) -> None:
    config, png = _setup(tmp_path, RESOLUTION, RESOLUTION)
    args = _point_args(world)
    if noise_m:
        args[-1] = args[-1].replace("=1,7.5", f"=1,{7.5 + 4 * noise_m:g}")

    code = calibrate(["ground", "--config", str(config), "--snapshot", str(png), *args])

    output = capsys.readouterr().out
    assert f"verdict: {verdict}" in output
    assert "nan" not in output
    assert ("n/a (the other points are degenerate)" in output) is (
        world[-1] == (0.0, 5.0)
    )
    assert code == (0 if stored else 1)
    assert ("ground:" in config.read_text()) is stored


def test_cli_warns_about_mirrored_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, png = _setup(tmp_path, RESOLUTION, RESOLUTION)
    image = [pixel(*point) for point in SQUARE]
    args = []
    for (x, y), (east, north) in zip(image, SQUARE, strict=True):
        args += ["--point", f"{x:.2f},{y:.2f}={north:g},{east:g}"]

    code = calibrate(["ground", "--config", str(config), "--snapshot", str(png), *args])

    assert code == 0
    assert "warning: the world points are a mirror image" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("order", "mirrored"),
    [([0, 1, 2, 3], False), ([2, 1, 0, 3], True)],
    ids=["camera", "1-3-swapped"],
)
def test_mirrored_fit_detected(order: list[int], mirrored: bool) -> None:
    pairs = _camera_pairs(order)
    fit, _ = build_ground(pairs, RESOLUTION)
    image = np.array([pair.image_xy for pair in pairs])

    assert fit.verdict is None
    assert is_mirrored(fit.homography, image) is mirrored
