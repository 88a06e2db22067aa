"""Video files made on the fly for source tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Matroska's TrackEntry/DefaultDuration element: ID 0x23E383, then a size byte.
_DEFAULT_DURATION_ID = bytes([0x23, 0xE3, 0x83])


def write_matroska_without_frame_rate(
    path: Path, *, frames: int, fps: float, size_wh: tuple[int, int] = (64, 48)
) -> Path:
    """Write MJPEG Matroska with blocks 1/fps apart and no frame rate on the track.

    OpenCV's FFmpeg writer stores the rate as the track's DefaultDuration;
    the block timestamps stay. The DefaultDuration value is overwritten with 0,
    which Matroska readers treat as "not set".
    """
    width, height = size_wh
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, size_wh
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPEG Matroska to {path}")
    for index in range(frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:, : (index % width) + 1] = (index % 256, 128, 255 - index % 256)
        writer.write(image)
    writer.release()

    data = bytearray(path.read_bytes())
    at = data.find(_DEFAULT_DURATION_ID)
    if at < 0:
        raise RuntimeError(f"{path} has no DefaultDuration element to patch")
    size_byte = data[at + 3]
    if size_byte & 0x80 == 0:
        raise RuntimeError(f"unexpected DefaultDuration size {size_byte:#x} in {path}")
    length = size_byte & 0x7F
    start = at + 4
    data[start : start + length] = bytes(length)
    path.write_bytes(bytes(data))
    return path
