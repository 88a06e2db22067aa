"""Decode frames on a thread of their own, so decoding overlaps inference.

`CaptureThread` reads a source into a bounded queue. For files and folders
it keeps every frame in order and blocks the reader when the queue is full,
so the reader runs at most `depth` frames ahead of the consumer. For live
sources the oldest waiting frame is dropped instead, so the consumer always
gets recent pictures and latency stays bounded.

Frames are handed over by reference: the decoder allocates each picture once
and nothing is copied on the way. OpenCV releases the GIL while it decodes,
so the thread decodes while ONNX Runtime runs the model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from edge.types import Frame

logger = logging.getLogger(__name__)

# How often a blocked reader checks whether it was asked to stop.
_POLL_S = 0.1


class CaptureError(RuntimeError):
    """An invalid capture setting; the message names the value."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Counters of one capture thread.

    Attributes:
        frames_read: frames the source yielded.
        frames_dropped: live frames dropped because the consumer was behind.
        decode_s: seconds the thread spent inside the source's iterator.
        waited_s: seconds the consumer waited for a frame; near zero when
            decoding keeps up with inference.
    """

    frames_read: int
    frames_dropped: int
    decode_s: float
    waited_s: float


class _End:
    """Queue marker for the end of the source."""


_END = _End()


class CaptureThread:
    """Iterate a source on a background thread through a bounded queue.

    Use it as a context manager and iterate it like the source. An error the
    source raises is raised again from the consumer's `next()` after the
    frames read before it.

    Args:
        source: any iterable of frames, usually a `VideoSource`.
        depth: frames decoded ahead. Two hide decode jitter; more only
            costs memory (one 1080p frame is about 6 MB).
        live: drop the oldest waiting frame when the queue is full instead
            of blocking the reader. Pass the source's `is_live`.
        name: thread name, for logs and debuggers.
    """

    def __init__(
        self,
        source: Iterable[Frame],
        *,
        depth: int = 2,
        live: bool = False,
        name: str = "capture",
    ) -> None:
        if depth < 1:
            raise CaptureError(f"capture depth must be at least 1, got {depth}")
        self._source = source
        self._live = live
        self._queue: queue.Queue[Frame | _End | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._frames_read = 0
        self._frames_dropped = 0
        self._decode_s = 0.0
        self._waited_s = 0.0

    @property
    def stats(self) -> CaptureStats:
        """A snapshot of the counters."""
        return CaptureStats(
            self._frames_read, self._frames_dropped, self._decode_s, self._waited_s
        )

    def start(self) -> None:
        """Start the reader thread; iterating starts it too."""
        if not self._started:
            self._started = True
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask the reader to stop and wait up to `timeout_s` for it."""
        self._stop.set()
        if self._started and self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning(
                    "capture thread %s still inside the source %.1f s after close; "
                    "it ends when the source's read returns",
                    self._thread.name,
                    timeout_s,
                )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        self.start()
        while True:
            started = time.perf_counter()
            item = self._queue.get()
            self._waited_s += time.perf_counter() - started
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        frames = iter(self._source)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                finally:
                    self._decode_s += time.perf_counter() - started
                self._frames_read += 1
                self._put(frame)
        except Exception as error:  # raised again in the consumer's thread
            self._put_final(error)
            return
        self._put_final(_END)

    def _put(self, frame: Frame) -> None:
        if self._live:
            self._put_dropping_oldest(frame)
            return
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=_POLL_S)
            except queue.Full:
                continue
            return

    def _put_dropping_oldest(self, frame: Frame) -> None:
        while True:
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._frames_dropped += 1
                except queue.Empty:
                    pass
                continue
            return

    def _put_final(self, item: _End | BaseException) -> None:
        # The end marker must not be dropped, even for live sources, or the
        # consumer would wait forever.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return
