"""Video sources of the edge node behind one interface, chosen by URI.

`open_source` accepts:

- a path or `file://` URL of a video file, or a folder of images;
- `rtsp://`, `rtsps://`, `http(s)://`, `rtmp://`, `srt://`, `udp://`,
  `tcp://` streams, read by OpenCV's FFmpeg backend;
- `/dev/videoN`, `v4l2:N` or a bare device number `N` for V4L2/USB cameras;
- `gst:PIPELINE` for a GStreamer pipeline ending in `appsink` (Jetson);
- `picamera:` or `picamera:N[?size=WxH&format=F]` for a Raspberry Pi camera.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cv2

from edge.sources.base import (
    Clock,
    SourceBusyError,
    SourceConfigError,
    SourceDecodeError,
    SourceDependencyError,
    SourceError,
    SourceNotFoundError,
    SourceOpenError,
    SourceStats,
    SourceStatus,
    StatusCallback,
    StatusEvent,
    SystemClock,
    VideoSource,
)
from edge.sources.file import FileSource
from edge.sources.images import ImageFolderSource
from edge.sources.live import (
    STREAM_SCHEMES,
    LiveSource,
    ReconnectPolicy,
    gstreamer_opener,
    prefer_rtsp_over_tcp,
    redact_uri,
    stream_opener,
    v4l2_opener,
)
from edge.sources.picamera import (
    Picamera2Factory,
    default_factory,
    parse_picamera_uri,
    picamera_opener,
)

__all__ = [
    "FileSource",
    "ImageFolderSource",
    "LiveSource",
    "ReconnectPolicy",
    "SourceBusyError",
    "SourceConfigError",
    "SourceDecodeError",
    "SourceDependencyError",
    "SourceError",
    "SourceNotFoundError",
    "SourceOpenError",
    "SourceStats",
    "SourceStatus",
    "StatusEvent",
    "SystemClock",
    "VideoSource",
    "open_source",
]

_V4L2 = re.compile(r"^(?:/dev/video|v4l2:)?(\d+)$")


def open_source(
    uri: str,
    *,
    fps: float | None = None,
    read_timeout_s: float = 5.0,
    open_timeout_s: float = 10.0,
    reconnect_initial_s: float = 0.5,
    reconnect_max_s: float = 30.0,
    max_reconnects: int | None = None,
    clock: Clock | None = None,
    on_status: StatusCallback | None = None,
    start_at: datetime | None = None,
    picamera_factory: Picamera2Factory | None = None,
    rng: random.Random | None = None,
) -> VideoSource:
    """Open the source that `uri` names.

    Files and folders are opened and their first frame decoded before this
    returns. Live sources return at once and connect in the background: a
    camera that is down yields an offline event and is retried, not raised.

    Args:
        uri: what to read; see the module docstring for the forms.
        fps: frame rate. An image folder requires it. A video file uses it
            only when the container reports no usable rate. A live source
            reports it when the device reports none, and a Pi camera is
            asked for it.
        read_timeout_s: live sources with no frame for this long go offline
            and are reopened.
        open_timeout_s: live open attempts that take longer are abandoned.
        reconnect_initial_s: first retry delay of a live source; it doubles.
        reconnect_max_s: cap of the retry delay, before up to 20 % jitter.
        max_reconnects: consecutive failed reopen attempts after which a live
            source's iteration ends; None retries forever.
        clock: time source; the system clock by default.
        on_status: called on each online/offline transition of a live source.
        start_at: UTC time of a file's or folder's first frame.
        picamera_factory: builds a `Picamera2` from a camera number; tests
            pass a fake, and the default imports picamera2.
        rng: random generator for the retry jitter.

    Raises:
        SourceError: a subclass naming the URI and the fix, for a missing
            file, an undecodable file, a folder without images or fps, an
            unsupported scheme, or a missing library or OpenCV backend.
    """
    text = uri.strip()
    if not text:
        raise SourceConfigError(uri, "source URI is empty; set source.uri")
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return _open_path(Path(unquote(urlsplit(text).path)), fps, start_at, clock)
    policy = ReconnectPolicy(
        read_timeout_s=read_timeout_s,
        open_timeout_s=open_timeout_s,
        reconnect_initial_s=reconnect_initial_s,
        reconnect_max_s=reconnect_max_s,
        max_reconnects=max_reconnects,
    )
    live = {"policy": policy, "fps": fps, "clock": clock, "on_status": on_status}
    if scheme in STREAM_SCHEMES:
        if scheme.startswith("rtsp"):
            prefer_rtsp_over_tcp()
        opener = stream_opener(text, policy)
        return LiveSource(redact_uri(text), opener, rng=rng, **live)  # type: ignore[arg-type]
    if text.startswith("gst:"):
        if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceDependencyError(
                text,
                "this OpenCV build has no GStreamer backend, so gst: sources "
                "cannot be opened; use an OpenCV built with GStreamer (on a "
                "Jetson, the system python3-opencv) or an rtsp:// URI",
            )
        opener = gstreamer_opener(text.removeprefix("gst:"))
        return LiveSource(text, opener, rng=rng, **live)  # type: ignore[arg-type]
    if text.startswith("picamera:"):
        settings = parse_picamera_uri(text, fps)
        factory = picamera_factory or default_factory(text)
        opener = picamera_opener(text, settings, factory)
        return LiveSource(text, opener, rng=rng, **live)  # type: ignore[arg-type]
    device = _V4L2.match(text)
    if device is not None:
        return LiveSource(text, v4l2_opener(int(device.group(1))), rng=rng, **live)  # type: ignore[arg-type]
    if "://" in text:
        raise SourceConfigError(
            text,
            f"unsupported URI scheme {scheme!r} in {redact_uri(text)}; use a path, "
            f"file://, {', '.join(s + '://' for s in STREAM_SCHEMES)}, gst:, "
            "picamera: or /dev/videoN",
        )
    return _open_path(Path(text), fps, start_at, clock)


def _open_path(
    path: Path, fps: float | None, start_at: datetime | None, clock: Clock | None
) -> VideoSource:
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, start_at=start_at, clock=clock)
    return FileSource(path, fps=fps, start_at=start_at, clock=clock)
