"""Video files: every frame in order, timed by the container's timestamps."""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import cv2

from edge.sources.base import (
    Clock,
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


class FileSource(VideoSource):
    """Read a video file from the first frame to the last, dropping none.

    `pts_s` is the container's timestamp of each frame (OpenCV's
    `CAP_PROP_POS_MSEC`) minus the first frame's. Where the container gives
    no usable timestamp (missing, or not increasing) the frame gets the
    previous timestamp plus one frame period. The period comes from the
    container's frame rate, else from the `fps` argument. When the container
    reports 0, NaN or an absurd rate, one warning is logged and the rate is
    taken from `fps`, or left as None so that the timestamps alone time the
    frames.

    Args:
        path: the video file.
        fps: frame rate used only when the container reports none.
        start_at: UTC time of the first frame; `captured_at` is this plus
            `pts_s`. Defaults to the clock's time when the file is opened.
        clock: time source for `start_at`.

    Raises:
        SourceNotFoundError: the file does not exist.
        SourceDecodeError: OpenCV cannot open the file or decode its first frame.
    """

    def __init__(
        self,
        path: Path,
        *,
        fps: float | None = None,
        start_at: datetime | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.uri = str(path)
        self._path = path
        if not path.is_file():
            raise SourceNotFoundError(
                self.uri,
                f"video file not found: {path} (resolved from the working "
                f"directory {Path.cwd()}); check source.uri or the --source path",
            )
        self._capture = _open_capture(path)
        self._fps = self._choose_fps(fps)
        self._period_s = 1.0 / self._fps if self._fps else None
        self._start_at = start_at or (clock or SystemClock()).utc_now()
        self._events: queue.Queue[StatusEvent] = queue.Queue()
        self._frames_read = 0
        self._first_msec: float | None = None
        self._last_pts_s: float | None = None
        self._header_frames = int(max(self._capture.get(cv2.CAP_PROP_FRAME_COUNT), 0))
        self._pending: Image | None = self._read_first()
        height, width = self._pending.shape[:2]
        self._resolution_wh = (int(width), int(height))
        logger.info(
            "opened video file %s: %dx%d, %s fps",
            path,
            width,
            height,
            f"{self._fps:g}" if self._fps else "unknown",
        )

    @property
    def fps(self) -> float | None:
        """The container's frame rate, else the configured fallback, else None."""
        return self._fps

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """Width and height of the first frame."""
        return self._resolution_wh

    @property
    def is_live(self) -> bool:
        """Always False: file frames are never dropped."""
        return False

    @property
    def stats(self) -> SourceStats:
        """Frames read so far; a file drops nothing and never reconnects."""
        return SourceStats(frames_read=self._frames_read)

    @property
    def events(self) -> queue.Queue[StatusEvent]:
        """Always empty: the end of a file is not an outage."""
        return self._events

    def __iter__(self) -> Iterator[Frame]:
        while True:
            image = self._next_image()
            if image is None:
                self._warn_if_short()
                return
            index = self._frames_read
            self._frames_read += 1
            pts_s = self._pts_s(index)
            yield Frame(
                image=image,
                index=index,
                pts_s=pts_s,
                captured_at=self._start_at + timedelta(seconds=pts_s),
            )

    def _warn_if_short(self) -> None:
        """Warn when a file ends well before the frame count in its header.

        Containers round their counts and some lose a frame or two at the
        end, so only a shortfall of more than 2 % (and 2 frames) is reported.
        """
        expected = self._header_frames
        missing = expected - self._frames_read
        if expected and missing > max(2, 0.02 * expected):
            logger.warning(
                "video file %s ended after %d of the %d frames its header "
                "announces; the file is probably truncated or damaged",
                self._path,
                self._frames_read,
                expected,
            )

    def close(self) -> None:
        """Release the capture."""
        self._capture.release()
        self._pending = None

    def _choose_fps(self, configured: float | None) -> float | None:
        reported = float(self._capture.get(cv2.CAP_PROP_FPS))
        fps = plausible_fps(reported)
        if fps is not None:
            return fps
        logger.warning(
            "video file %s reports %r fps, which is not a usable frame rate; "
            "timing frames by their timestamps%s",
            self._path,
            reported,
            f", with {configured:g} fps where they are missing" if configured else "",
        )
        return plausible_fps(configured)

    def _read_first(self) -> Image:
        ok, image = self._capture.read()
        if not ok or image is None:
            self._capture.release()
            raise SourceDecodeError(
                self.uri,
                f"video file {self._path} opened but its first frame cannot be "
                "decoded; check that the file is complete and that its codec is "
                "supported by OpenCV's FFmpeg (convert it to H.264 MP4 if not)",
            )
        return cast(Image, image)

    def _next_image(self) -> Image | None:
        if self._pending is not None:
            first, self._pending = self._pending, None
            return first
        # OpenCV allocates a new array per read, so the frame can be handed on
        # without a copy.
        ok, image = self._capture.read()
        return cast(Image, image) if ok else None

    def _pts_s(self, index: int) -> float:
        msec = float(self._capture.get(cv2.CAP_PROP_POS_MSEC))
        pts_s: float | None = None
        if math.isfinite(msec) and msec >= 0.0:
            if self._first_msec is None:
                self._first_msec = msec
            candidate = (msec - self._first_msec) / 1000.0
            if self._last_pts_s is None or candidate > self._last_pts_s:
                pts_s = candidate
        if pts_s is None:
            pts_s = self._fallback_pts_s(index, msec)
        self._last_pts_s = pts_s
        return pts_s

    def _fallback_pts_s(self, index: int, msec: float) -> float:
        if self._last_pts_s is None:
            return 0.0
        if self._period_s is None:
            raise SourceDecodeError(
                self.uri,
                f"video file {self._path} gives frame {index} the timestamp "
                f"{msec!r} ms, not after the previous frame, and reports no frame "
                "rate; pass the frame rate with --fps or source.fps",
            )
        return self._last_pts_s + self._period_s


def _open_capture(path: Path) -> cv2.VideoCapture:
    # FFmpeg first: it reports container timestamps for every format tested
    # (AVI, MP4, Matroska, GIF); other backends are tried only if it fails.
    for backend in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        capture = cv2.VideoCapture(str(path), backend)
        if capture.isOpened():
            return capture
        capture.release()
    raise SourceDecodeError(
        str(path),
        f"video file {path} exists but OpenCV cannot open it; check that it is a "
        "video (not a partial download) in a format FFmpeg reads",
    )
