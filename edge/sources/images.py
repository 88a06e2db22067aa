"""Image-sequence folders: numbered stills played back at a configured frame rate."""

from __future__ import annotations

import logging
import queue
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import cv2

from edge.sources.base import (
    Clock,
    SourceConfigError,
    SourceDecodeError,
    SourceNotFoundError,
    SourceStats,
    StatusEvent,
    SystemClock,
    VideoSource,
    plausible_fps,
)
from edge.types import Frame, Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Return a sort key that orders `img2` before `img10`."""
    parts = _DIGITS.split(name.casefold())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


def list_images(folder: Path) -> list[Path]:
    """Return the folder's JPEG, PNG and BMP files in natural order."""
    files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.casefold() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda path: natural_key(path.name))


class ImageFolderSource(VideoSource):
    """Play the images of a folder in natural order at `fps`.

    Frame `i` has `pts_s = i / fps`. An image that cannot be decoded raises
    `SourceDecodeError` naming the file, rather than being skipped: image
    sequences are mostly evaluation data whose ground truth is keyed by frame
    number, and a silent skip would shift every later frame against it.

    Args:
        folder: folder with `.jpg`, `.jpeg`, `.png` or `.bmp` files.
        fps: frame rate of the sequence; required, because stills carry no
            timing.
        start_at: UTC time of the first frame; defaults to the clock's time
            when the folder is opened.
        clock: time source for `start_at`.

    Raises:
        SourceNotFoundError: the folder does not exist.
        SourceConfigError: `fps` is missing or not a usable rate, or the folder
            has no images.
        SourceDecodeError: the first image cannot be decoded.
    """

    def __init__(
        self,
        folder: Path,
        *,
        fps: float | None,
        start_at: datetime | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.uri = str(folder)
        self._folder = folder
        if not folder.is_dir():
            raise SourceNotFoundError(
                self.uri, f"image folder not found: {folder}; check source.uri"
            )
        self._fps = self._require_fps(fps)
        self._paths = list_images(folder)
        if not self._paths:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceConfigError(
                self.uri,
                f"image folder {folder} has no images ({suffixes}); point "
                "source.uri at the folder that contains the frames",
            )
        self._start_at = start_at or (clock or SystemClock()).utc_now()
        self._events: queue.Queue[StatusEvent] = queue.Queue()
        self._frames_read = 0
        self._closed = False
        self._first = self._decode(self._paths[0])
        height, width = self._first.shape[:2]
        self._resolution_wh = (int(width), int(height))
        logger.info(
            "opened image folder %s: %d images, %dx%d, %g fps",
            folder,
            len(self._paths),
            width,
            height,
            self._fps,
        )

    @property
    def fps(self) -> float:
        """The configured frame rate."""
        return self._fps

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """Width and height of the first image."""
        return self._resolution_wh

    @property
    def is_live(self) -> bool:
        """Always False: every image is delivered."""
        return False

    @property
    def stats(self) -> SourceStats:
        """Images read so far."""
        return SourceStats(frames_read=self._frames_read)

    @property
    def events(self) -> queue.Queue[StatusEvent]:
        """Always empty: the end of a sequence is not an outage."""
        return self._events

    @property
    def frame_count(self) -> int:
        """Number of images in the folder."""
        return len(self._paths)

    def __iter__(self) -> Iterator[Frame]:
        warned_size = False
        for index in range(self._frames_read, len(self._paths)):
            if self._closed:
                return
            image = self._first if index == 0 else self._decode(self._paths[index])
            size_wh = (int(image.shape[1]), int(image.shape[0]))
            if size_wh != self._resolution_wh and not warned_size:
                warned_size = True
                logger.warning(
                    "image %s is %dx%d but the sequence started at %dx%d; "
                    "zones and lines are defined for the first size",
                    self._paths[index],
                    *size_wh,
                    *self._resolution_wh,
                )
            self._frames_read = index + 1
            pts_s = index / self._fps
            yield Frame(
                image=image,
                index=index,
                pts_s=pts_s,
                captured_at=self._start_at + timedelta(seconds=pts_s),
            )

    def close(self) -> None:
        """Stop the iteration; there is nothing to release."""
        self._closed = True

    def _require_fps(self, fps: float | None) -> float:
        usable = plausible_fps(fps)
        if usable is None:
            raise SourceConfigError(
                self.uri,
                f"image folder {self._folder} needs a frame rate, got {fps!r}; "
                "pass --fps or set source.fps (for example 25)",
            )
        return usable

    def _decode(self, path: Path) -> Image:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceDecodeError(
                self.uri,
                f"image {path} cannot be decoded; replace or delete the file "
                "(frames are numbered by position, so deleting shifts later ones)",
            )
        return cast(Image, image)
