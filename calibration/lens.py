"""Intrinsic calibration from chessboard photos.

The board is given by its inner corners (a board of 10x7 squares has 9x6
inner corners) and the side of one square. Corners are found with
`cv2.findChessboardCorners`, refined to a tenth of a pixel with
`cv2.cornerSubPix`, and `cv2.calibrateCamera` fits the pinhole matrix and the
distortion coefficients k1, k2, p1, p2, k3. Photos should show the board at
different angles and over the whole picture, corners included: distortion
is strongest there.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from edge.config_calibration import LensConfig

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# Fewer photos leave the five distortion terms poorly constrained; OpenCV's
# own tutorial uses 10 or more.
MIN_IMAGES = 3
RECOMMENDED_IMAGES = 10
GOOD_RMS_PX = 0.5
USABLE_RMS_PX = 1.0
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
_FIND_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE


class LensCalibrationError(CalibrationError):
    """Photos from which no calibration can be made."""


class Verdict(StrEnum):
    """Technician action that the calibration result calls for."""

    GOOD = "good"
    OK = "ok"
    REDO = "redo"


@dataclass(frozen=True, slots=True)
class Board:
    """A chessboard target.

    Attributes:
        columns: inner corners along a row.
        rows: inner corners along a column.
        square_mm: side of one square in millimetres.
    """

    columns: int
    rows: int
    square_mm: float

    @classmethod
    def parse(cls, text: str, square_mm: float) -> Board:
        """Parse `COLSxROWS` (inner corners) as given to --board.

        Raises:
            LensCalibrationError: on a malformed size or a non-positive square.
        """
        columns, separator, rows = text.lower().partition("x")
        if not separator or not columns.isdigit() or not rows.isdigit():
            raise LensCalibrationError(
                f"--board {text!r} is invalid; write the inner corners as COLSxROWS, "
                "e.g. 9x6 for a board of 10x7 squares"
            )
        board = cls(int(columns), int(rows), float(square_mm))
        if board.columns < 3 or board.rows < 3:
            raise LensCalibrationError(
                f"--board {text!r} has fewer than 3 inner corners on a side; count "
                "the corners where four squares meet"
            )
        if board.columns == board.rows:
            logger.warning(
                "a square board (%dx%d corners) has no distinct orientation; a "
                "board with different counts gives steadier results",
                board.columns,
                board.rows,
            )
        if not board.square_mm > 0:
            raise LensCalibrationError(
                f"--square-mm is {square_mm:g}; give the side of one square in mm"
            )
        return board

    @property
    def pattern_size(self) -> tuple[int, int]:
        """The (columns, rows) size OpenCV expects."""
        return self.columns, self.rows

    def object_points(self) -> npt.NDArray[np.float32]:
        """Return the corners on the board plane, in metres, row by row."""
        grid = np.zeros((self.rows * self.columns, 3), dtype=np.float32)
        xs, ys = np.meshgrid(np.arange(self.columns), np.arange(self.rows))
        grid[:, 0] = xs.ravel()
        grid[:, 1] = ys.ravel()
        return grid * np.float32(self.square_mm / 1000.0)


@dataclass(frozen=True, slots=True)
class LensResult:
    """Outcome of a calibration.

    Attributes:
        camera_matrix: 3x3 intrinsics in pixels.
        dist_coeffs: k1, k2, p1, p2, k3.
        resolution_wh: size of the photos.
        rms_px: RMS reprojection error over all corners.
        per_image_rms_px: RMS per used photo, to find a bad one.
        used: photos in which the board was found.
        rejected: photos in which it was not.
    """

    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    resolution_wh: tuple[int, int]
    rms_px: float
    per_image_rms_px: dict[Path, float]
    used: tuple[Path, ...]
    rejected: tuple[Path, ...]

    @property
    def verdict(self) -> Verdict:
        """GOOD under 0.5 px, OK under 1 px, otherwise REDO."""
        if self.rms_px < GOOD_RMS_PX:
            return Verdict.GOOD
        if self.rms_px < USABLE_RMS_PX:
            return Verdict.OK
        return Verdict.REDO

    def to_config(self) -> LensConfig:
        """Return the `lens` config section."""
        matrix = [[round(float(v), 4) for v in row] for row in self.camera_matrix]
        return LensConfig(
            camera_matrix=(tuple(matrix[0]), tuple(matrix[1]), (0.0, 0.0, 1.0)),  # type: ignore[arg-type]
            dist_coeffs=[round(float(v), 6) for v in self.dist_coeffs.ravel()],
            resolution=self.resolution_wh,
            rms_px=round(self.rms_px, 4),
            images_used=len(self.used) or None,
        )


def expand_images(pattern: str) -> list[Path]:
    """Return the files matching a glob pattern, sorted.

    Raises:
        LensCalibrationError: when nothing matches.
    """
    paths = sorted(Path(name) for name in glob.glob(pattern, recursive=True))
    files = [path for path in paths if path.is_file()]
    if not files:
        raise LensCalibrationError(
            f"--images {pattern!r} matches no file; quote the pattern so the shell "
            "does not expand it, e.g. --images 'board/*.jpg'"
        )
    return files


def find_corners(
    path: Path, board: Board
) -> tuple[npt.NDArray[np.float32] | None, tuple[int, int]]:
    """Find and refine the board's inner corners in one photo.

    Returns:
        The (N, 1, 2) corners, or None when the board is not found, and the
        photo's width and height.

    Raises:
        LensCalibrationError: when the file is not a readable image.
    """
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise LensCalibrationError(f"{path} is not a readable image")
    size = (int(grey.shape[1]), int(grey.shape[0]))
    found, corners = cv2.findChessboardCorners(
        grey, board.pattern_size, flags=_FIND_FLAGS
    )
    if not found:
        return None, size
    refined = cv2.cornerSubPix(grey, corners, (11, 11), (-1, -1), _SUBPIX_CRITERIA)
    return np.asarray(refined, dtype=np.float32), size


def calibrate(paths: list[Path], board: Board) -> LensResult:
    """Calibrate the camera from chessboard photos.

    Raises:
        LensCalibrationError: when photos differ in size, or the board is
            found in fewer than `MIN_IMAGES` of them.
    """
    image_points: list[npt.NDArray[np.float32]] = []
    used: list[Path] = []
    rejected: list[Path] = []
    resolution: tuple[int, int] | None = None
    for path in paths:
        corners, size = find_corners(path, board)
        if resolution is None:
            resolution = size
        elif size != resolution:
            raise LensCalibrationError(
                f"{path} is {size[0]}x{size[1]} but the first photo is "
                f"{resolution[0]}x{resolution[1]}; take all photos at one resolution"
            )
        if corners is None:
            logger.warning("board %dx%d not found in %s", *board.pattern_size, path)
            rejected.append(path)
            continue
        image_points.append(corners)
        used.append(path)
    if len(used) < MIN_IMAGES or resolution is None:
        raise LensCalibrationError(
            f"the {board.columns}x{board.rows} board was found in {len(used)} of "
            f"{len(paths)} photos; at least {MIN_IMAGES} are needed "
            f"({RECOMMENDED_IMAGES}+ recommended). Check --board counts inner "
            "corners, and that the whole board with a white border is in view"
        )
    object_points = [board.object_points() for _ in used]
    rms, raw_matrix, raw_dist, rvecs, tvecs = cv2.calibrateCamera(
        object_points, image_points, resolution, None, None
    )
    matrix = np.asarray(raw_matrix, dtype=np.float64)
    dist = np.asarray(raw_dist, dtype=np.float64)
    per_image = {
        path: _image_rms(objects, corners, (rvec, tvec), matrix, dist)
        for path, objects, corners, rvec, tvec in zip(
            used, object_points, image_points, rvecs, tvecs, strict=True
        )
    }
    logger.info("calibrated from %d photos: rms %.3f px", len(used), rms)
    return LensResult(
        camera_matrix=matrix,
        dist_coeffs=dist.ravel(),
        resolution_wh=resolution,
        rms_px=float(rms),
        per_image_rms_px=per_image,
        used=tuple(used),
        rejected=tuple(rejected),
    )


def _image_rms(
    objects: npt.NDArray[np.float32],
    corners: npt.NDArray[np.float32],
    pose: tuple[object, object],
    matrix: FloatArray,
    dist: FloatArray,
) -> float:
    rvec, tvec = (np.asarray(v, dtype=np.float64) for v in pose)
    projected, _ = cv2.projectPoints(objects, rvec, tvec, matrix, dist)
    residual = projected.reshape(-1, 2) - corners.reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))


def verdict_advice(verdict: Verdict) -> str:
    """Return what the technician should do after a calibration."""
    if verdict is Verdict.GOOD:
        return "good: the lens model is accurate to well under a pixel"
    if verdict is Verdict.OK:
        return (
            "ok: usable; for better accuracy retake blurred photos and cover the "
            "picture's corners"
        )
    return (
        "redo: the error is over 1 px; drop the photos with the largest error "
        "below, keep the board sharp and flat, and cover the whole picture"
    )
