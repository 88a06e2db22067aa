"""Live sources: network streams, V4L2 devices and GStreamer pipelines.

A reader thread reads frames and keeps only the newest. The consumer takes
whatever is newest when it is ready, and frames replaced before that are
counted as dropped. The consumer side is also the watchdog, because an
OpenCV read can block forever on a hung stream: when no frame arrives within
`read_timeout_s`, the source goes offline and a fresh thread reopens it. The
stuck reader is abandoned (it is a daemon thread) and releases its own capture
if its read ever returns; it is never released from another thread, because
releasing a `cv2.VideoCapture` while another thread is inside `read()` can
crash the process.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import cv2

from edge.sources.base import (
    Clock,
    SourceBusyError,
    SourceError,
    SourceNotFoundError,
    SourceOpenError,
    SourceStats,
    SourceStatus,
    StatusCallback,
    StatusEvent,
    StatusReporter,
    SystemClock,
    VideoSource,
    plausible_fps,
)
from edge.types import Frame, Image

logger = logging.getLogger(__name__)


class Capture(Protocol):
    """An opened camera or stream that a reader thread reads from."""

    @property
    def nominal_fps(self) -> float | None:
        """The frame rate the device or stream reports, if any."""
        ...

    def read(self) -> Image | None:
        """Block until the next frame; return None when the stream failed or ended."""
        ...

    def release(self) -> None:
        """Close the device or connection."""
        ...


CaptureOpener = Callable[[], Capture]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a live source retries.

    Attributes:
        read_timeout_s: a source with no new frame for this long is declared
            offline and reopened. Lower detects a hung camera sooner but
            risks false outages on a stream whose frame interval is longer.
        open_timeout_s: an open attempt that has not returned after this long
            is abandoned like a hung read.
        reconnect_initial_s: delay before the first retry; it doubles per
            failed attempt.
        reconnect_max_s: cap of the doubling delay. Jitter of up to
            `jitter_ratio` of the delay is added on top, so nodes that lost
            the same server do not retry in step.
        max_reconnects: consecutive failed open attempts allowed after the
            first; iteration ends once they are used up. None retries forever.
    """

    read_timeout_s: float = 5.0
    open_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_reconnects: int | None = None
    jitter_ratio: float = 0.2

    def __post_init__(self) -> None:
        for name in ("read_timeout_s", "open_timeout_s", "reconnect_initial_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s!r}) must be >= "
                f"reconnect_initial_s ({self.reconnect_initial_s!r})"
            )
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError(
                f"max_reconnects must be >= 0 or None, got {self.max_reconnects!r}"
            )

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """Return the delay before retry number `failures` (0-based), with jitter."""
        base = min(self.reconnect_max_s, self.reconnect_initial_s * 2.0**failures)
        return base + rng.uniform(0.0, base * self.jitter_ratio)


class _Phase(enum.Enum):
    CONNECTING = "connecting"
    WAITING_FIRST = "waiting for the first frame"
    STREAMING = "streaming"
    BACKOFF = "waiting to retry"
    FINISHED = "finished"


class LiveSource(VideoSource):
    """A camera or stream read by a background thread, reconnected when it fails.

    Iteration yields the newest frame on each request, blocks
    while the source is offline, and ends on `close()` or once
    `policy.max_reconnects` is used up (then `last_error` says why).
    `pts_s` is monotonic seconds since the first frame and `captured_at` the
    wall-clock time the frame was read.

    Args:
        uri: the source's URI with any password removed; used in logs,
            events and errors.
        opener: opens the capture; it raises `SourceError` on failure.
        policy: timeouts and retry settings.
        fps: nominal frame rate to report when the capture reports none.
        clock: time source for timestamps and the watchdog.
        on_status: called on each online/offline transition from the thread
            that observed it; it must not block.
        rng: random generator for the jitter.
    """

    def __init__(
        self,
        uri: str,
        opener: CaptureOpener,
        *,
        policy: ReconnectPolicy | None = None,
        fps: float | None = None,
        clock: Clock | None = None,
        on_status: StatusCallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.uri = uri
        self._opener = opener
        self._policy = policy or ReconnectPolicy()
        self._configured_fps = plausible_fps(fps)
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._reporter = StatusReporter(uri, self._clock, on_status)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._generation = 0
        self._phase = _Phase.CONNECTING
        self._phase_since = self._clock.monotonic()
        self._latest: Frame | None = None
        self._last_frame_at = 0.0
        self._first_frame_at: float | None = None
        self._fps: float | None = self._configured_fps
        self._resolution_wh: tuple[int, int] | None = None
        self._counts = {field.name: 0 for field in fields(SourceStats)}
        self._closed = False
        self.last_error: SourceError | None = None
        self._start_worker(0)

    @property
    def fps(self) -> float | None:
        """Reported frame rate of the capture, else the configured one, else None."""
        return self._fps

    @property
    def resolution_wh(self) -> tuple[int, int] | None:
        """Size of the newest frame; None before the first frame."""
        return self._resolution_wh

    @property
    def is_live(self) -> bool:
        """Always True."""
        return True

    @property
    def status(self) -> SourceStatus | None:
        """The current status; None until the first frame or failure."""
        return self._reporter.status

    @property
    def stats(self) -> SourceStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return SourceStats(**self._counts)

    @property
    def events(self) -> queue.Queue[StatusEvent]:
        """Online/offline transitions, oldest first."""
        return self._reporter.events

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self._take_newest()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        """Stop the reader and end the iteration; a stuck reader is abandoned."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._generation += 1
            self._cond.notify_all()
        self._stop.set()
        logger.info("closed live source %s", self.uri)

    # Consumer side -------------------------------------------------------

    def _take_newest(self) -> Frame | None:
        slice_s = min(0.25, self._policy.read_timeout_s / 4.0)
        while True:
            restart: tuple[int, str] | None = None
            with self._cond:
                while self._latest is None and restart is None:
                    if self._closed or self._phase is _Phase.FINISHED:
                        return None
                    restart = self._check_watchdog()
                    if restart is None:
                        self._cond.wait(timeout=slice_s)
                if restart is None:
                    frame, self._latest = self._latest, None
                    return frame
            generation, reason = restart
            self._reporter.report(SourceStatus.OFFLINE, reason)
            self._start_worker(generation)

    def _check_watchdog(self) -> tuple[int, str] | None:
        """Abandon the current reader if it is stuck; return the new generation."""
        now = self._clock.monotonic()
        waited = now - max(self._phase_since, self._last_frame_at)
        if self._phase in (_Phase.STREAMING, _Phase.WAITING_FIRST):
            if waited < self._policy.read_timeout_s:
                return None
            self._counts["read_timeouts"] += 1
            reason = f"no frame for {waited:.1f} s (read timeout)"
        elif self._phase is _Phase.CONNECTING:
            if waited < self._policy.open_timeout_s:
                return None
            self._counts["open_failures"] += 1
            reason = f"open did not return within {waited:.1f} s (open timeout)"
        else:
            return None
        logger.warning("live source %s: %s; reopening it", self.uri, reason)
        self._generation += 1
        self._set_phase(_Phase.CONNECTING)
        return self._generation, reason

    # Reader side ---------------------------------------------------------

    def _start_worker(self, generation: int) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(generation,),
            name=f"source-reader-{generation}",
            daemon=True,
        )
        thread.start()

    def _is_current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed

    def _set_phase(self, phase: _Phase) -> None:
        self._phase = phase
        self._phase_since = self._clock.monotonic()

    def _run(self, generation: int) -> None:
        failures = 0
        while self._is_current(generation):
            with self._cond:
                if not self._is_current(generation):
                    return
                self._set_phase(_Phase.CONNECTING)
            try:
                capture = self._opener()
            except SourceError as error:
                failures += 1
                if not self._handle_open_failure(generation, error, failures):
                    return
                continue
            failures = 0
            reason = self._pump(generation, capture)
            if reason is None:
                return
            self._reporter.report(SourceStatus.OFFLINE, reason)
            logger.warning("live source %s went offline: %s", self.uri, reason)
            if not self._wait_backoff(generation, 0):
                return

    def _handle_open_failure(
        self, generation: int, error: SourceError, failures: int
    ) -> bool:
        """Count a failed open; return False when the worker must stop."""
        with self._cond:
            if not self._is_current(generation):
                return False
            self._counts["open_failures"] += 1
            self.last_error = error
        self._reporter.report(SourceStatus.OFFLINE, str(error))
        limit = self._policy.max_reconnects
        if limit is not None and failures > limit:
            logger.error(
                "live source %s: giving up after %d failed open attempts: %s",
                self.uri,
                failures,
                error,
            )
            with self._cond:
                self._set_phase(_Phase.FINISHED)
                self._cond.notify_all()
            return False
        return self._wait_backoff(generation, failures - 1, error)

    def _wait_backoff(
        self, generation: int, failures: int, error: SourceError | None = None
    ) -> bool:
        delay = self._policy.backoff_s(failures, self._rng)
        with self._cond:
            if not self._is_current(generation):
                return False
            self._set_phase(_Phase.BACKOFF)
        logger.warning(
            "live source %s: retrying in %.2f s (attempt %d failed%s)",
            self.uri,
            delay,
            failures + 1,
            f": {error}" if error else "",
        )
        return not self._stop.wait(delay) and self._is_current(generation)

    def _pump(self, generation: int, capture: Capture) -> str | None:
        """Read frames until the stream fails; return why, or None when abandoned."""
        try:
            with self._cond:
                if not self._is_current(generation):
                    return None
                self._set_phase(_Phase.WAITING_FIRST)
                if self._configured_fps is None:
                    self._fps = capture.nominal_fps
            while True:
                try:
                    image = capture.read()
                except Exception as error:  # noqa: BLE001 - any backend failure
                    image = None
                    failure = f"read raised {error!r}"
                else:
                    failure = "read failed: the stream ended or the connection dropped"
                if not self._is_current(generation):
                    return None
                if image is None:
                    return failure
                self._publish(generation, image)
        finally:
            capture.release()

    def _publish(self, generation: int, image: Image) -> None:
        came_back = False
        went_online = False
        with self._cond:
            if not self._is_current(generation):
                return
            now = self._clock.monotonic()
            if self._first_frame_at is None:
                self._first_frame_at = now
            if self._latest is not None:
                self._counts["frames_dropped_stale"] += 1
            index = self._counts["frames_read"]
            self._counts["frames_read"] += 1
            self._latest = Frame(
                image=image,
                index=index,
                pts_s=now - self._first_frame_at,
                captured_at=self._clock.utc_now(),
            )
            self._last_frame_at = now
            self._resolution_wh = (int(image.shape[1]), int(image.shape[0]))
            if self._phase is not _Phase.STREAMING:
                self._set_phase(_Phase.STREAMING)
                went_online = True
                came_back = self._reporter.status is SourceStatus.OFFLINE
                if came_back:
                    self._counts["reconnects"] += 1
            self._cond.notify_all()
        if went_online:
            self._reporter.report(SourceStatus.ONLINE, "receiving frames")
            logger.info(
                "live source %s is online (%dx%d)", self.uri, *self._resolution_wh
            )


# OpenCV captures ------------------------------------------------------------


class OpenCvCapture:
    """A `cv2.VideoCapture` behind the `Capture` protocol."""

    def __init__(self, capture: cv2.VideoCapture) -> None:
        self._capture = capture

    @property
    def nominal_fps(self) -> float | None:
        """`CAP_PROP_FPS` when it is a usable rate."""
        return plausible_fps(float(self._capture.get(cv2.CAP_PROP_FPS)))

    def read(self) -> Image | None:
        """Return the next frame; OpenCV allocates it, so no copy is made."""
        ok, image = self._capture.read()
        return cast(Image, image) if ok else None

    def release(self) -> None:
        """Release the capture."""
        self._capture.release()


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "srt", "udp", "tcp")


def redact_uri(uri: str) -> str:
    """Return `uri` with the password of its user part replaced by `***`."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def prefer_rtsp_over_tcp() -> None:
    """Ask OpenCV's FFmpeg to carry RTSP over TCP unless the user set options.

    UDP loses packets on busy or NATed links, which shows as smeared frames.
    The variable is process-wide and read at each open; a value the user set
    is kept as it is.
    """
    if "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"


def stream_opener(url: str, policy: ReconnectPolicy) -> CaptureOpener:
    """Return an opener for an FFmpeg stream URL with open and read timeouts.

    OpenCV's own read timeout is set to twice the watchdog's, so that the
    watchdog declares the outage and the abandoned read still ends soon after.
    """
    redacted = redact_uri(url)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        round(policy.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        round(policy.read_timeout_s * 2000),
    ]

    def open_stream() -> Capture:
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceOpenError(
                redacted,
                f"cannot open stream {redacted}; check that the camera is on and "
                "reachable, the URL path and the credentials are right, and "
                "nothing blocks the port",
            )
        return OpenCvCapture(capture)

    return open_stream


def v4l2_opener(index: int) -> CaptureOpener:
    """Return an opener for `/dev/video{index}` through OpenCV's V4L2 backend."""
    device = Path(f"/dev/video{index}")

    def open_device() -> Capture:
        capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if capture.isOpened():
            # A one-frame driver queue keeps latency low; drivers may ignore it.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return OpenCvCapture(capture)
        capture.release()
        raise _device_error(device)

    return open_device


def _device_error(device: Path) -> SourceError:
    uri = str(device)
    if not device.exists():
        return SourceNotFoundError(
            uri,
            f"camera device {device} not found; plug the camera in, and list "
            "devices with `v4l2-ctl --list-devices`",
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return SourceBusyError(
            uri,
            f"no permission to open {device}; add the service user to the "
            "`video` group",
        )
    return SourceBusyError(
        uri,
        f"camera device {device} cannot be opened: another process may be using "
        f"it (find it with `fuser {device}`), or it is a metadata node, not a "
        "capture node (try the neighbouring /dev/video number)",
    )


def gstreamer_opener(pipeline: str) -> CaptureOpener:
    """Return an opener for a GStreamer pipeline ending in `appsink`."""

    def open_pipeline() -> Capture:
        capture = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if not capture.isOpened():
            capture.release()
            raise SourceOpenError(
                f"gst:{pipeline}",
                f"GStreamer pipeline did not start: {pipeline}; test it with "
                "`gst-launch-1.0` (replace appsink with fakesink) and check "
                "that it ends in `appsink`",
            )
        return OpenCvCapture(capture)

    return open_pipeline
