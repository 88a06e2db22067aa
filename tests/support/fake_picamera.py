"""A thin stand-in for picamera2's `Picamera2`, for tests off the Raspberry Pi.

It returns a solid colour in the memory layout the real library uses for each
format: "RGB888" is B, G, R; "BGR888" is R, G, B; "XBGR8888" is R, G, B, 255;
"XRGB8888" is B, G, R, 255.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

_LAYOUT = {
    "RGB888": (2, 1, 0),
    "BGR888": (0, 1, 2),
    "XBGR8888": (0, 1, 2),
    "XRGB8888": (2, 1, 0),
}


class FakePicamera2:
    """Serve frames of one solid RGB colour, like a camera aimed at a card.

    Args:
        camera_num: camera index, as the real constructor takes it.
        rgb: the colour in front of the camera, as (red, green, blue).
        busy: raise RuntimeError from the constructor, as picamera2 does when
            another process holds the camera.
    """

    instances: list[FakePicamera2] = []

    def __init__(
        self,
        camera_num: int = 0,
        *,
        rgb: tuple[int, int, int] = (255, 0, 0),
        busy: bool = False,
    ) -> None:
        if busy:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_num = camera_num
        self.rgb = rgb
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.frames = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict[str, object], controls: dict[str, object]
    ) -> dict[str, Any]:
        return {"main": dict(main), "controls": dict(controls)}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera must be configured before starting")
        self.started = True

    def capture_array(self, name: str = "main") -> npt.NDArray[np.uint8]:
        if not self.started or self.config is None:
            raise RuntimeError("Camera is not running")
        width, height = self.config[name]["size"]
        pixel_format = self.config[name]["format"]
        channels = 4 if pixel_format.startswith("X") else 3
        array = np.full((height, width, channels), 255, dtype=np.uint8)
        for channel, source in enumerate(_LAYOUT[pixel_format]):
            array[:, :, channel] = self.rgb[source]
        self.frames += 1
        # A real camera delivers at its frame rate; 100 fps keeps tests fast.
        threading.Event().wait(0.01)
        return array

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
