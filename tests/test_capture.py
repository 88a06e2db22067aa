"""Capture thread: order and completeness for files, dropping for live, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge.capture import CaptureError, CaptureThread
from edge.sources import SourceDecodeError, open_source
from edge.types import Frame

START = datetime(2024, 5, 1, tzinfo=UTC)


def frames(count: int, delay_s: float = 0.0) -> Iterator[Frame]:
    for index in range(count):
        if delay_s:
            time.sleep(delay_s)
        image = np.full((8, 8, 3), index % 256, dtype=np.uint8)
        yield Frame(image, index, index / 25, START)


def failing_after(count: int) -> Iterator[Frame]:
    yield from frames(count)
    raise SourceDecodeError("test.avi", "frame 3 cannot be decoded")


@pytest.mark.parametrize("depth", [1, 2, 8], ids=["depth-1", "depth-2", "depth-8"])
def test_file_keeps_every_frame_in_order(depth: int) -> None:
    with CaptureThread(frames(50), depth=depth) as capture:
        indexes = []
        for frame in capture:
            time.sleep(0.001)
            indexes.append(frame.index)
    assert indexes == list(range(50))
    assert capture.stats.frames_read == 50
    assert capture.stats.frames_dropped == 0


def test_file_reader_stays_bounded_ahead() -> None:
    capture = CaptureThread(frames(100), depth=3)
    capture.start()
    time.sleep(0.2)
    read_ahead = capture.stats.frames_read
    capture.close()
    # The queue contains `depth` frames and the reader has one it cannot put.
    assert read_ahead <= 4


def test_live_drops_oldest_when_behind() -> None:
    with CaptureThread(frames(40, delay_s=0.002), depth=2, live=True) as capture:
        indexes = []
        for frame in capture:
            time.sleep(0.02)
            indexes.append(frame.index)
    assert indexes == sorted(indexes)
    assert indexes[-1] == 39
    assert capture.stats.frames_dropped > 0
    assert len(indexes) + capture.stats.frames_dropped == 40


def test_source_error_follows_earlier_frames() -> None:
    received: list[int] = []

    def consume(capture: CaptureThread) -> None:
        received.extend(frame.index for frame in capture)

    capture = CaptureThread(failing_after(3))
    with pytest.raises(SourceDecodeError, match="frame 3 cannot be decoded"):
        consume(capture)
    capture.close()
    assert received == [0, 1, 2]


def test_close_unblocks_a_full_reader() -> None:
    capture = CaptureThread(frames(1000), depth=1)
    capture.start()
    time.sleep(0.05)
    started = time.perf_counter()
    capture.close()
    assert time.perf_counter() - started < 1.0
    assert not any(t.name == "capture" and t.is_alive() for t in threading.enumerate())


def test_rejects_zero_depth() -> None:
    with pytest.raises(CaptureError, match="capture depth must be at least 1, got 0"):
        CaptureThread(frames(1), depth=0)


@pytest.mark.media
def test_real_clip_matches_direct_read(vtest_avi: Path) -> None:
    with open_source(str(vtest_avi), start_at=START) as source:
        direct = [(f.index, f.pts_s, int(f.image[::64, ::64].sum())) for f in source]
    with (
        open_source(str(vtest_avi), start_at=START) as source,
        CaptureThread(source, depth=2) as capture,
    ):
        threaded = [(f.index, f.pts_s, int(f.image[::64, ::64].sum())) for f in capture]
    assert threaded == direct
