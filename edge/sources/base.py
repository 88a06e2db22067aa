"""The interface every video source implements, its errors, stats and status events."""

from __future__ import annotations

import enum
import logging
import math
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self

from edge.types import Frame

logger = logging.getLogger(__name__)

#: Frame rates outside (0, MAX_PLAUSIBLE_FPS) are treated as not reported.
#: 1000 is included because OpenCV reports 1 / time_base, which is 1000 for
#: Matroska, when FFmpeg cannot estimate a frame rate.
MAX_PLAUSIBLE_FPS = 1000.0


class SourceError(Exception):
    """A source cannot be opened or read; the message names the URI and the fix."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri


class SourceNotFoundError(SourceError):
    """The file, folder or device of a source does not exist."""


class SourceDecodeError(SourceError):
    """A file or image exists but OpenCV cannot decode it."""


class SourceConfigError(SourceError):
    """The URI or a setting of a source is invalid or missing."""


class SourceBusyError(SourceError):
    """The camera device is in use by another process."""


class SourceDependencyError(SourceError):
    """A library or OpenCV backend that the source needs is not installed."""


class SourceOpenError(SourceError):
    """A live source could not be opened; it is retried with backoff."""


class SourceStatus(enum.StrEnum):
    """Whether a source currently delivers frames."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A transition of a source between online and offline.

    Attributes:
        uri: the source's URI, with any password removed.
        status: the new status.
        reason: why the status changed, in words for an operator.
        at: UTC wall-clock time of the transition.
        monotonic_s: the source clock's monotonic time of the transition.
        offline_for_s: for an online event, how long the source was offline
            before; None for offline events and for the first online event.
    """

    uri: str
    status: SourceStatus
    reason: str
    at: datetime
    monotonic_s: float
    offline_for_s: float | None = None


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of a source since it was opened.

    Attributes:
        frames_read: frames decoded, including frames dropped later.
        frames_dropped_stale: frames a live source replaced by a newer one
            before the consumer took them.
        reconnects: times a live source came back online after being offline.
        read_timeouts: times no frame arrived within the read timeout.
        open_failures: failed attempts to open or reopen a live source.
    """

    frames_read: int = 0
    frames_dropped_stale: int = 0
    reconnects: int = 0
    read_timeouts: int = 0
    open_failures: int = 0


class Clock(Protocol):
    """Time source of a video source; tests may pass their own."""

    def monotonic(self) -> float:
        """Return seconds of a clock that never goes backwards."""
        ...

    def utc_now(self) -> datetime:
        """Return the current UTC wall-clock time."""
        ...


class SystemClock:
    """The process's monotonic clock and the system's UTC time."""

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    def utc_now(self) -> datetime:
        """Return the current time in UTC."""
        return datetime.now(UTC)


StatusCallback = Callable[[StatusEvent], None]


class StatusReporter:
    """Records online/offline transitions and hands them to a callback and a queue.

    Only transitions are reported: a second offline while offline is ignored,
    so a stream that stays down for an hour yields one event. Callbacks run
    on the thread that observed the transition and must not block.
    """

    def __init__(self, uri: str, clock: Clock, callback: StatusCallback | None) -> None:
        self.uri = uri
        self.events: queue.Queue[StatusEvent] = queue.Queue()
        self._clock = clock
        self._callback = callback
        self._lock = threading.Lock()
        self._status: SourceStatus | None = None
        self._offline_since: float | None = None

    @property
    def status(self) -> SourceStatus | None:
        """The last reported status; None before the first transition."""
        return self._status

    def report(self, status: SourceStatus, reason: str) -> StatusEvent | None:
        """Record `status` and return its event, or None when it is no change."""
        with self._lock:
            if status is self._status:
                return None
            now = self._clock.monotonic()
            offline_for = None
            if status is SourceStatus.ONLINE and self._offline_since is not None:
                offline_for = now - self._offline_since
            self._offline_since = now if status is SourceStatus.OFFLINE else None
            self._status = status
            event = StatusEvent(
                self.uri, status, reason, self._clock.utc_now(), now, offline_for
            )
        self.events.put(event)
        if self._callback is not None:
            try:
                self._callback(event)
            except Exception:
                logger.exception("status callback of %s raised; ignored", self.uri)
        return event


class VideoSource(ABC):
    """A stream of frames from a file, an image folder, a network camera or a device.

    Use it as a context manager and iterate it. Files and folders end after
    their last frame. Live sources end only on `close()` or after
    `max_reconnects` failed reopen attempts.
    """

    uri: str

    @property
    @abstractmethod
    def fps(self) -> float | None:
        """Nominal frame rate; None when a live source does not report one."""

    @property
    @abstractmethod
    def resolution_wh(self) -> tuple[int, int] | None:
        """Width and height in pixels; None while a live source has no frame yet."""

    @property
    @abstractmethod
    def is_live(self) -> bool:
        """True for cameras and streams, whose frames are dropped when late."""

    @property
    @abstractmethod
    def stats(self) -> SourceStats:
        """A snapshot of the source's counters."""

    @property
    @abstractmethod
    def events(self) -> queue.Queue[StatusEvent]:
        """Online/offline transitions, oldest first."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in order."""

    @abstractmethod
    def close(self) -> None:
        """Release the capture; iteration ends. Calling it twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def plausible_fps(value: float | None) -> float | None:
    """Return `value` when it is a usable frame rate, else None.

    OpenCV returns 0 when a container has no rate, NaN from some backends,
    and absurd values (1000, 90000) when it falls back to the time base.
    """
    if value is None or math.isnan(value):
        return None
    if 0.0 < value < MAX_PLAUSIBLE_FPS:
        return float(value)
    return None
