"""Raspberry Pi cameras through picamera2, converted to the detector's BGR.

picamera2 names formats with DRM fourccs. A DRM name lists the channels of a
little-endian packed word from the high byte down, so the bytes in memory run
the other way. "RGB888" arrays are B, G, R and need no conversion, while
"BGR888" is R, G, B. "XBGR8888" is R, G, B, X and "XRGB8888" is B, G, R, X,
both with 4 channels. Every format is turned into contiguous 3-channel BGR.

NOTE: the layouts are checked against tests/support/fake_picamera.py only;
confirm a red card stays red on a real camera before relying on a new format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources.base import (
    SourceBusyError,
    SourceConfigError,
    SourceDependencyError,
    SourceNotFoundError,
    SourceOpenError,
)
from edge.sources.live import CaptureOpener
from edge.types import Image

logger = logging.getLogger(__name__)

#: cv2.cvtColor codes from each picamera2 format to BGR; None means "as is".
_TO_BGR: dict[str, int | None] = {
    "RGB888": None,
    "BGR888": cv2.COLOR_RGB2BGR,
    "XBGR8888": cv2.COLOR_RGBA2BGR,
    "XRGB8888": cv2.COLOR_BGRA2BGR,
}
SUPPORTED_FORMATS = tuple(_TO_BGR)
DEFAULT_SIZE_WH = (1280, 720)
DEFAULT_FORMAT = "RGB888"


class Picamera2Like(Protocol):
    """The part of picamera2's `Picamera2` this module uses."""

    def create_video_configuration(
        self, main: dict[str, object], controls: dict[str, object]
    ) -> object:
        """Return a configuration for continuous capture."""
        ...

    def configure(self, config: object) -> None:
        """Apply a configuration."""
        ...

    def start(self) -> None:
        """Start streaming."""
        ...

    def capture_array(self, name: str = "main") -> npt.NDArray[Any]:
        """Block until the next frame of stream `name` and return it."""
        ...

    def stop(self) -> None:
        """Stop streaming."""
        ...

    def close(self) -> None:
        """Release the camera."""
        ...


Picamera2Factory = Callable[[int], Picamera2Like]


@dataclass(frozen=True, slots=True)
class PiCameraSettings:
    """Camera number, size, pixel format and frame rate to request.

    Attributes:
        camera_num: index of the camera, 0 for the first CSI port.
        size_wh: output size of the main stream.
        format: picamera2 pixel format; see `SUPPORTED_FORMATS`.
        fps: frame rate to request; None keeps the sensor mode's default.
    """

    camera_num: int = 0
    size_wh: tuple[int, int] = DEFAULT_SIZE_WH
    format: str = DEFAULT_FORMAT
    fps: float | None = None


def parse_picamera_uri(uri: str, fps: float | None = None) -> PiCameraSettings:
    """Parse `picamera:`, `picamera:1` or `picamera:0?size=1920x1080&format=XBGR8888`.

    Raises:
        SourceConfigError: the camera number, size or format is invalid.
    """
    rest = uri.removeprefix("picamera:")
    number, _, query = rest.partition("?")
    options = {key: values[-1] for key, values in parse_qs(query).items()}
    if number and not number.isdigit():
        raise SourceConfigError(
            uri, f"invalid camera number {number!r} in {uri}; use picamera:0"
        )
    size_wh = DEFAULT_SIZE_WH
    if "size" in options:
        width, _, height = options["size"].partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise SourceConfigError(
                uri,
                f"invalid size {options['size']!r} in {uri}; use WIDTHxHEIGHT, "
                "for example size=1280x720",
            )
        size_wh = (int(width), int(height))
    pixel_format = options.get("format", DEFAULT_FORMAT)
    if pixel_format not in _TO_BGR:
        raise SourceConfigError(
            uri,
            f"unsupported picamera2 format {pixel_format!r} in {uri}; use one of "
            f"{', '.join(SUPPORTED_FORMATS)}",
        )
    return PiCameraSettings(int(number or 0), size_wh, pixel_format, fps)


def to_bgr(array: npt.NDArray[Any], pixel_format: str) -> Image:
    """Convert a picamera2 array of `pixel_format` to contiguous 3-channel BGR.

    Raises:
        ValueError: the array's shape does not fit the format.
    """
    image = np.asarray(array)
    channels = 4 if pixel_format.startswith("X") else 3
    if image.ndim != 3 or image.shape[2] != channels or image.dtype != np.uint8:
        raise ValueError(
            f"picamera2 returned a {image.dtype} array of shape {image.shape} for "
            f"format {pixel_format}; expected uint8 (height, width, {channels})"
        )
    code = _TO_BGR[pixel_format]
    if code is None:
        return np.ascontiguousarray(image)
    return cast(Image, cv2.cvtColor(image, code))


def default_factory(uri: str) -> Picamera2Factory:
    """Return picamera2's `Picamera2` class.

    Raises:
        SourceDependencyError: picamera2 is not installed.
    """
    try:
        # Imported here: picamera2 exists only on Raspberry Pi OS.
        from picamera2 import Picamera2  # noqa: PLC0415
    except ImportError as error:
        raise SourceDependencyError(
            uri,
            f"{uri} needs picamera2, which is not installed: on Raspberry Pi OS "
            "run `sudo apt install python3-picamera2` and create the virtual "
            "environment with --system-site-packages",
        ) from error
    factory: Picamera2Factory = Picamera2
    return factory


class PiCameraCapture:
    """A started Picamera2 camera behind the live source's `Capture` protocol."""

    def __init__(self, camera: Picamera2Like, settings: PiCameraSettings) -> None:
        self._camera = camera
        self._settings = settings

    @property
    def nominal_fps(self) -> float | None:
        """The requested frame rate, if any."""
        return self._settings.fps

    def read(self) -> Image | None:
        """Block for the next frame and convert it to BGR."""
        array = self._camera.capture_array("main")
        return to_bgr(array, self._settings.format)

    def release(self) -> None:
        """Stop the camera and release it for other processes."""
        try:
            self._camera.stop()
        finally:
            self._camera.close()


def picamera_opener(
    uri: str, settings: PiCameraSettings, factory: Picamera2Factory
) -> CaptureOpener:
    """Return an opener that configures and starts the camera of `settings`."""

    def open_camera() -> PiCameraCapture:
        try:
            camera = factory(settings.camera_num)
        except IndexError as error:
            raise SourceNotFoundError(
                uri,
                f"no Pi camera number {settings.camera_num} ({uri}); check the "
                "ribbon cable and list cameras with `rpicam-hello --list-cameras`",
            ) from error
        except RuntimeError as error:
            raise SourceBusyError(
                uri,
                f"Pi camera {settings.camera_num} cannot be acquired ({error}); "
                "another process may hold it: stop it, or check `fuser /dev/media*`",
            ) from error
        try:
            _start(camera, settings)
        except Exception as error:
            camera.close()
            raise SourceOpenError(
                uri,
                f"Pi camera {settings.camera_num} rejected {settings.size_wh[0]}x"
                f"{settings.size_wh[1]} {settings.format} ({error!r}); pick a size "
                "the sensor supports",
            ) from error
        return PiCameraCapture(camera, settings)

    return open_camera


def _start(camera: Picamera2Like, settings: PiCameraSettings) -> None:
    controls: dict[str, object] = {}
    if settings.fps is not None:
        controls["FrameRate"] = settings.fps
    config = camera.create_video_configuration(
        main={"size": settings.size_wh, "format": settings.format},
        controls=controls,
    )
    camera.configure(config)
    camera.start()
    logger.info(
        "started Pi camera %d: %dx%d %s",
        settings.camera_num,
        *settings.size_wh,
        settings.format,
    )
