"""Frames for calibration and evaluation: reading sources and letterboxing.

Letterboxing goes through the edge detector's `LetterboxBuffer`, so the
calibration set has the same resize filter, padding and channel order as the
node's input. A calibration set prepared any other way gives the quantiser
activation ranges that the node never sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.detector.letterbox import LetterboxBuffer, LetterboxTransform

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

Image = npt.NDArray[np.uint8]
Tensor = npt.NDArray[np.float32]


class FrameSourceError(ValueError):
    """A frame source is missing, unreadable or empty."""


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One frame read for calibration or evaluation.

    Attributes:
        source: file the frame came from.
        index: 0-based frame number within that file (0 for a still image).
        image: BGR uint8 array of shape (height, width, 3).
    """

    source: Path
    index: int
    image: Image


def letterbox(image: Image, size: int) -> tuple[Tensor, LetterboxTransform]:
    """Fit a BGR frame into a square model input with the detector's own code.

    Args:
        image: BGR uint8 frame of shape (height, width, 3).
        size: side of the square model input in pixels.

    Returns:
        A new float32 RGB 0..1 tensor of shape (1, 3, size, size) and the
        transform that maps input pixels back to frame pixels.
    """
    buffer = LetterboxBuffer((size, size))
    transform = buffer.fill(image)
    return buffer.tensor.astype(np.float32, copy=True), transform


def _count_frames(path: Path) -> int:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise FrameSourceError(f"cannot open video {path}; check the file")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def expand_sources(sources: Sequence[Path]) -> list[Path]:
    """List the image and video files that `sources` names.

    A folder stands for the images directly inside it, in name order.

    Raises:
        FrameSourceError: a source does not exist or a folder has no images.
    """
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            images = sorted(
                p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                raise FrameSourceError(
                    f"folder {source} has no images with suffix "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))}"
                )
            files.extend(images)
        elif source.is_file():
            files.append(source)
        else:
            raise FrameSourceError(f"frame source {source} does not exist")
    return files


def spread_indices(total: int, count: int, offset: float = 0.0) -> list[int]:
    """Pick `count` indices spread evenly over `range(total)`.

    Args:
        total: number of items to pick from.
        count: number of items wanted; all items when it is at least `total`.
        offset: fraction of one step (0..1) to shift the picks by, so that two
            calls with offsets 0 and 0.5 pick disjoint frames.
    """
    if count >= total:
        return list(range(total))
    step = total / count
    return sorted({min(total - 1, int((i + offset) * step)) for i in range(count)})


def _read_video_frames(path: Path, indices: list[int]) -> Iterator[SourceFrame]:
    capture = cv2.VideoCapture(str(path))
    wanted = set(indices)
    try:
        position = 0
        while wanted:
            ok, image = capture.read()
            if not ok:
                break
            if position in wanted:
                wanted.discard(position)
                yield SourceFrame(path, position, np.asarray(image, dtype=np.uint8))
            position += 1
    finally:
        capture.release()
    if wanted:
        # Container headers overstate the frame count of some clips.
        logger.warning(
            "video %s ended before frames %s; using fewer frames",
            path,
            sorted(wanted)[:5],
        )


def read_frames(
    sources: Sequence[Path], count: int, offset: float = 0.0
) -> list[SourceFrame]:
    """Read about `count` frames spread over all frames of `sources`.

    Still images count as one frame each, videos as their frame count, and
    the picks are spread over the concatenation, so every source contributes
    in proportion to its length.

    Raises:
        FrameSourceError: a source is missing or unreadable, or no frame
            could be read.
    """
    if count < 1:
        raise FrameSourceError(f"frame count must be at least 1, got {count}")
    files = expand_sources(sources)
    lengths = [_count_frames(path) for path in files]
    picks = spread_indices(sum(lengths), count, offset)
    frames: list[SourceFrame] = []
    start = 0
    for path, length in zip(files, lengths, strict=True):
        local = [i - start for i in picks if start <= i < start + length]
        start += length
        if not local:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FrameSourceError(f"cannot read image {path}; check the file")
            frames.append(SourceFrame(path, 0, np.asarray(image, dtype=np.uint8)))
        else:
            frames.extend(_read_video_frames(path, local))
    if not frames:
        raise FrameSourceError(
            f"no frames could be read from {', '.join(map(str, sources))}"
        )
    logger.info("read %d frames from %d files", len(frames), len(files))
    return frames
