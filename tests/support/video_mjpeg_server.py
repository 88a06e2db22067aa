"""A loopback HTTP server that streams JPEG frames as MJPEG, for live-source tests.

The server sends `multipart/x-mixed-replace` parts, the format of most IP
cameras' MJPEG endpoints, which FFmpeg reads with its `mpjpeg` demuxer. A test
can stall it (connections stay open, no bytes flow), resume it, drop every
open connection, or stop it and start it again on the same port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

BOUNDARY = "sitlabframe"


def encode_clip(path: Path, *, frames: int, width: int = 320) -> list[bytes]:
    """Read the first `frames` frames of a clip, scale them to `width` and JPEG them."""
    capture = cv2.VideoCapture(str(path))
    encoded: list[bytes] = []
    try:
        while len(encoded) < frames:
            ok, image = capture.read()
            if not ok:
                break
            height = round(image.shape[0] * width / image.shape[1])
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                encoded.append(jpeg.tobytes())
    finally:
        capture.release()
    if not encoded:
        raise ValueError(f"no frame could be read from {path}")
    return encoded


def synthetic_frames(count: int, size_wh: tuple[int, int] = (160, 120)) -> list[bytes]:
    """Return `count` JPEG frames of a moving bar, for tests that need no media."""
    width, height = size_wh
    encoded = []
    for index in range(count):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        left = (index * 7) % width
        image[:, left : left + 10] = (0, 200, 255)
        ok, jpeg = cv2.imencode(".jpg", image)
        if not ok:
            raise RuntimeError("OpenCV failed to encode a synthetic JPEG frame")
        encoded.append(jpeg.tobytes())
    return encoded


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MjpegServer:
    """Serve `frames` in a loop at `fps` to every client of `/stream.mjpg`."""

    def __init__(self, frames: Sequence[bytes], *, fps: float, port: int = 0) -> None:
        self.frames = list(frames)
        self.fps = fps
        self.port = port or free_port()
        self.frames_sent = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._generation = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """HTTP address of the stream."""
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        """Listen on the port and serve until `stop`."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every open stream."""
        self.drop_connections()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stall(self) -> None:
        """Stop sending bytes but keep every connection open, like a hung camera."""
        self._flowing.clear()

    def resume(self) -> None:
        """Send frames again after `stall`."""
        self._flowing.set()

    def drop_connections(self) -> None:
        """End every open stream; new clients are served normally."""
        with self._lock:
            self._generation += 1
        self._flowing.set()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header(
                    "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"
                )
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                owner.serve_stream(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        return Handler

    def serve_stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Write parts to one client until it leaves or its connection is dropped."""
        with self._lock:
            generation = self._generation
        period = 1.0 / self.fps
        index = 0
        next_at = time.monotonic()
        while True:
            while not self._flowing.wait(timeout=0.05):
                if self._generation != generation:
                    return
            if self._generation != generation:
                return
            jpeg = self.frames[index % len(self.frames)]
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n"
            ).encode("ascii")
            try:
                handler.wfile.write(head + jpeg + b"\r\n")
                handler.wfile.flush()
            except OSError:
                return
            self.frames_sent += 1
            index += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
