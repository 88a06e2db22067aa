"""One detector session shared by the pipelines of several cameras.

Each camera's pipeline calls `SharedDetector.detect` from its own thread.
A worker thread collects the requests that arrive within `gather_s` (up to
`max_batch`) and runs them through `Detector.detect_batch`: one session run
when the model has a dynamic batch axis, one run per image otherwise. One
session means one copy of the weights and one ONNX Runtime thread pool, so
cameras do not fight over the cores with pools of their own.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from edge.detector import Detector
from edge.types import Detections, Image

logger = logging.getLogger(__name__)


class SharedDetectorError(RuntimeError):
    """The shared detector was closed or misconfigured."""


@dataclass(slots=True)
class _Request:
    image: Image
    future: Future[Detections] = field(default_factory=Future)


class SharedDetector:
    """Serialise and batch detection requests from several threads.

    Args:
        detector: the one detector all cameras use.
        max_batch: most images per session run. Batches larger than the
            number of cameras never form, so the camera count is a good value.
        gather_s: how long the worker waits for more requests after the
            first. Longer forms fuller batches and adds that much latency.
    """

    def __init__(
        self, detector: Detector, *, max_batch: int = 4, gather_s: float = 0.005
    ) -> None:
        if max_batch < 1:
            raise SharedDetectorError(f"max_batch must be at least 1, got {max_batch}")
        if gather_s < 0:
            raise SharedDetectorError(f"gather_s must be 0 or more, got {gather_s}")
        self.detector = detector
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._closed = threading.Event()
        self._worker = threading.Thread(
            target=self._serve, name="shared-detector", daemon=True
        )
        self._worker.start()
        self.batches = 0
        self.images = 0

    def detect(self, image: Image, timeout_s: float | None = None) -> Detections:
        """Detect objects in one BGR frame; blocks until its batch has run.

        Raises:
            SharedDetectorError: the shared detector is closed.
            DetectorError: the detector failed on the batch.
            TimeoutError: no result within `timeout_s`.
        """
        if self._closed.is_set():
            raise SharedDetectorError(
                "the shared detector is closed; create a new one before detecting"
            )
        request = _Request(image)
        self._requests.put(request)
        return request.future.result(timeout_s)

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._requests.put(None)
        self._worker.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._run(batch)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                request = self._requests.get(timeout=self.gather_s)
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        try:
            results = self.detector.detect_batch([request.image for request in batch])
        except Exception as error:  # each caller gets the error from its future
            logger.exception("shared detector failed on a batch of %d", len(batch))
            for request in batch:
                request.future.set_exception(error)
            return
        self.batches += 1
        self.images += len(batch)
        for request, result in zip(batch, results, strict=True):
            request.future.set_result(result)
