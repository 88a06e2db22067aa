"""Lens calibration on chessboards rendered with known intrinsics and distortion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.lens import (
    Board,
    LensCalibrationError,
    Verdict,
    calibrate,
    expand_images,
)
from edge.config_calibration import LensConfig
from edge.lens import LensError, LensModel

WIDTH, HEIGHT = 960, 720
FX, FY, CX, CY = 820.0, 815.0, 484.0, 356.0
DIST = np.array([-0.28, 0.09, 0.0008, -0.0005, 0.0])
CAMERA = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]], dtype=np.float64)
BOARD = Board(columns=9, rows=6, square_mm=30.0)
SUPERSAMPLE = 4
# Each square edge is cut into this many pieces before projection, so edges
# bend with the distortion like a real photo's.
EDGE_STEPS = 8

# (rotation vector in radians, translation in metres) per photo: the board
# tilted in different directions and moved over the picture, corners included.
POSES = [
    ((0.0, 0.0, 0.0), (-0.12, -0.075, 0.55)),
    ((0.35, 0.0, 0.0), (-0.12, -0.075, 0.6)),
    ((-0.35, 0.1, 0.0), (-0.12, -0.075, 0.6)),
    ((0.0, 0.4, 0.1), (-0.12, -0.075, 0.6)),
    ((0.0, -0.4, -0.1), (-0.1, -0.075, 0.6)),
    ((0.2, 0.3, 0.2), (-0.3, -0.22, 0.65)),
    ((-0.2, 0.3, -0.2), (0.03, -0.22, 0.65)),
    ((0.2, -0.3, 0.15), (-0.3, 0.07, 0.65)),
    ((-0.25, -0.25, 0.0), (0.03, 0.07, 0.65)),
    ((0.1, 0.1, 0.5), (-0.1, -0.1, 0.5)),
    ((0.3, -0.2, -0.4), (-0.14, -0.06, 0.7)),
    ((-0.1, 0.45, 0.0), (-0.2, -0.08, 0.6)),
]


def _square_outline(col: int, row: int, square_m: float) -> np.ndarray:
    corners = [(col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1)]
    points = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for step in range(EDGE_STEPS):
            t = step / EDGE_STEPS
            points.append((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, 0.0))
    # Squares run from -1 so the board's first inner corner is (0, 0).
    return (np.array(points) - [1, 1, 0]) * square_m


def render_board(rvec: tuple, tvec: tuple) -> np.ndarray:
    """Render the board photo through the known camera, antialiased by supersampling."""
    big_camera = CAMERA.copy()
    big_camera[:2] *= SUPERSAMPLE
    big_camera[:2, 2] += (SUPERSAMPLE - 1) / 2  # pixel centres stay aligned
    canvas = np.full((HEIGHT * SUPERSAMPLE, WIDTH * SUPERSAMPLE), 255, np.uint8)
    square = BOARD.square_mm / 1000.0
    for row in range(BOARD.rows + 1):
        for col in range(BOARD.columns + 1):
            if (row + col) % 2:
                continue
            outline = _square_outline(col, row, square)
            projected, _ = cv2.projectPoints(
                outline, np.array(rvec), np.array(tvec), big_camera, DIST
            )
            polygon = np.round(projected.reshape(-1, 2) * 16).astype(np.int32)
            cv2.fillPoly(canvas, [polygon], 0, cv2.LINE_AA, shift=4)
    return cv2.resize(canvas, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def board_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("board")
    for index, (rvec, tvec) in enumerate(POSES):
        cv2.imwrite(str(folder / f"board-{index:02d}.png"), render_board(rvec, tvec))
    # A photo without the board must be skipped, not fail the run.
    cv2.imwrite(
        str(folder / "board-99-empty.png"), np.full((HEIGHT, WIDTH), 200, np.uint8)
    )
    return folder


def test_calibration_recovers_known_intrinsics(board_photos: Path) -> None:
    result = calibrate(expand_images(str(board_photos / "*.png")), BOARD)

    assert len(result.used) == len(POSES)
    assert [path.name for path in result.rejected] == ["board-99-empty.png"]
    assert result.rms_px < 0.5
    assert result.verdict is Verdict.GOOD
    fx, fy = result.camera_matrix[0, 0], result.camera_matrix[1, 1]
    assert abs(fx - FX) / FX < 0.01
    assert abs(fy - FY) / FY < 0.01
    assert abs(result.camera_matrix[0, 2] - CX) < 5
    assert abs(result.camera_matrix[1, 2] - CY) < 5
    assert abs(result.dist_coeffs[0] - DIST[0]) < 0.03


def test_calibrated_lens_undistorts_points(board_photos: Path) -> None:
    result = calibrate(expand_images(str(board_photos / "*.png")), BOARD)
    model = LensModel.from_config(result.to_config())
    ideal = np.array([[60.0, 50.0], [480.0, 360.0], [900.0, 680.0]])
    true_model = LensModel(CAMERA, DIST, (WIDTH, HEIGHT))
    distorted = true_model.distort_points(ideal)

    recovered = true_model.undistort_points(distorted)
    estimated = model.undistort_points(distorted)

    np.testing.assert_allclose(recovered, ideal, atol=0.01)
    # The estimated model maps through its own matrix, so compare in
    # normalised ray directions instead of pixels.
    rays_true = (ideal - [CX, CY]) / [FX, FY]
    matrix = model.camera_matrix
    rays_estimated = (estimated - matrix[:2, 2]) / [matrix[0, 0], matrix[1, 1]]
    np.testing.assert_allclose(rays_estimated, rays_true, atol=0.003)


def test_lens_model_scales_to_stream() -> None:
    model = LensModel(CAMERA, DIST, (WIDTH, HEIGHT))
    half = model.for_stream((WIDTH // 2, HEIGHT // 2))
    point = np.array([[100.0, 80.0]])

    full_result = model.undistort_points(point * 2)
    half_result = half.undistort_points(point)

    np.testing.assert_allclose(half_result * 2, full_result, atol=1e-6)
    with pytest.raises(LensError, match="different aspect ratio"):
        model.for_stream((1280, 720))


@pytest.mark.parametrize(
    ("text", "square", "message"),
    [
        ("9-6", 30.0, "write the inner corners as COLSxROWS"),
        ("2x6", 30.0, "fewer than 3 inner corners"),
        ("9x6", 0.0, "give the side of one square"),
    ],
    ids=["no-x", "too-small", "zero-square"],
)
def test_board_rejects_bad_sizes(text: str, square: float, message: str) -> None:
    with pytest.raises(LensCalibrationError, match=message):
        Board.parse(text, square)


def test_too_few_boards_rejected(tmp_path: Path) -> None:
    for index in range(2):
        cv2.imwrite(str(tmp_path / f"b{index}.png"), render_board(*POSES[index]))
    cv2.imwrite(str(tmp_path / "b9.png"), np.full((HEIGHT, WIDTH), 200, np.uint8))

    with pytest.raises(LensCalibrationError, match="found in 2 of 3 photos"):
        calibrate(expand_images(str(tmp_path / "*.png")), BOARD)


def test_glob_without_match_rejected(tmp_path: Path) -> None:
    with pytest.raises(LensCalibrationError, match="matches no file"):
        expand_images(str(tmp_path / "*.jpg"))


def test_lens_config_rejects_bad_matrix() -> None:
    with pytest.raises(ValueError, match="last row"):
        LensConfig(
            camera_matrix=((800, 0, 320), (0, 800, 240), (0, 1, 1)),
            dist_coeffs=[0, 0, 0, 0, 0],
            resolution=(640, 480),
            rms_px=0.2,
        )
