"""Picture-quality check of a live source, and the tampering reference frame.

Measured on greyscale frames scaled to 640 px wide, so thresholds do not
depend on the camera's resolution:

- focus: variance of the Laplacian, median over frames. It also drops on a
  blank scene, so a WARN on a plain wall is not always a focus problem.
- exposure: mean luma (0-255) and the share of pixels at 0-5 or 250-255.
- noise: standard deviation of the sensor noise in grey levels, from the
  median absolute difference of consecutive frames. Moving objects cover a
  minority of pixels, so the median ignores them. A one-frame high-pass
  estimate (Immerkaer, "Fast Noise Variance Estimation", 1996) is used when
  only one frame is read or when the codec repeats static pixels exactly.
- frame rate: frames over stream time, against the config's `source.fps`.

The reference frame is the per-pixel median of the sampled frames, which
removes people and cars passing through, saved as a greyscale PNG.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from edge.sources import SourceError, open_source
from edge.types import Frame

logger = logging.getLogger(__name__)

WORK_WIDTH_PX = 640
MAX_REFERENCE_FRAMES = 25
_LIVE_RECONNECTS = 3
_CLIP_LOW, _CLIP_HIGH = 5, 250


class CheckError(CalibrationError):
    """A source that cannot be checked."""


class Level(StrEnum):
    """Verdict of one measured value against its thresholds."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits of the check; a value past `warn_*` warns, past `fail_*` fails.

    The focus limits are the usual rule of thumb for the variance of the
    Laplacian at 640 px width (sharp street scenes score several hundred).
    Noise limits are grey levels of standard deviation.
    """

    focus_warn: float = 100.0
    focus_fail: float = 30.0
    luma_ok: tuple[float, float] = (60.0, 190.0)
    luma_warn: tuple[float, float] = (35.0, 220.0)
    clipped_warn: float = 0.02
    clipped_fail: float = 0.10
    noise_warn: float = 3.0
    noise_fail: float = 6.0
    fps_warn_ratio: float = 0.9
    fps_fail_ratio: float = 0.5


@dataclass(frozen=True, slots=True)
class Item:
    """One checked quantity with its verdict and advice."""

    name: str
    value: float
    unit: str
    level: Level
    advice: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    """All items and the reference frame."""

    items: tuple[Item, ...]
    reference: npt.NDArray[np.uint8]
    frames: int
    seconds: float

    @property
    def worst(self) -> Level:
        """FAIL if any item fails, else WARN if any warns, else OK."""
        levels = {item.level for item in self.items}
        for level in (Level.FAIL, Level.WARN):
            if level in levels:
                return level
        return Level.OK


def read_frames(
    uri: str, *, seconds: float, fps: float | None = None
) -> tuple[list[npt.NDArray[np.uint8]], float]:
    """Read greyscale work frames for `seconds` of stream time.

    Returns:
        The frames and the stream time they span.

    Raises:
        CheckError: when the source cannot be read or gives no frame.
    """
    grey_frames: list[npt.NDArray[np.uint8]] = []
    first: Frame | None = None
    last: Frame | None = None
    try:
        with open_source(uri, fps=fps, max_reconnects=_LIVE_RECONNECTS) as source:
            for frame in source:
                first = first or frame
                last = frame
                grey_frames.append(_work_grey(frame.image))
                if frame.pts_s - first.pts_s >= seconds:
                    break
    except SourceError as error:
        raise CheckError(f"cannot read the source: {error}") from None
    if first is None or last is None:
        raise CheckError("the source delivered no frame")
    return grey_frames, last.pts_s - first.pts_s


def _work_grey(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    grey = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    height, width = grey.shape
    if width == WORK_WIDTH_PX:
        return grey
    size = (WORK_WIDTH_PX, max(1, round(height * WORK_WIDTH_PX / width)))
    interpolation = cv2.INTER_AREA if width > WORK_WIDTH_PX else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(grey, size, interpolation=interpolation), np.uint8)


def focus_measure(grey: npt.NDArray[np.uint8]) -> float:
    """Return the variance of the Laplacian; higher is sharper."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def noise_sigma(frames: list[npt.NDArray[np.uint8]]) -> float:
    """Estimate the noise standard deviation in grey levels."""
    if len(frames) < 2:
        return _highpass_noise(frames[0])
    temporal = _temporal_noise(frames)
    # Video codecs copy unchanged blocks, so on a compressed stream most
    # static pixels repeat exactly and the temporal median is 0; the
    # high-pass estimate, which also counts fine texture, is used then.
    return temporal if temporal > 0 else _highpass_noise(frames[0])


def _temporal_noise(frames: list[npt.NDArray[np.uint8]]) -> float:
    estimates = []
    for previous, current in zip(frames, frames[1:], strict=False):
        difference = current.astype(np.int16) - previous.astype(np.int16)
        # For Gaussian noise, median |d| = 0.6745 sigma_d and sigma_d =
        # sqrt(2) sigma of one frame.
        mad = float(np.median(np.abs(difference)))
        estimates.append(mad / 0.6745 / math.sqrt(2))
    return float(np.median(estimates))


def _highpass_noise(grey: npt.NDArray[np.uint8]) -> float:
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = cv2.filter2D(grey.astype(np.float64), -1, kernel)[1:-1, 1:-1]
    height, width = response.shape
    return float(
        math.sqrt(math.pi / 2) * np.abs(response).sum() / (6.0 * width * height)
    )


def evaluate(
    frames: list[npt.NDArray[np.uint8]],
    seconds: float,
    *,
    expected_fps: float | None,
    thresholds: Thresholds | None = None,
) -> CheckResult:
    """Measure the frames and give a verdict per item."""
    limits = thresholds or Thresholds()
    sample = frames[:: max(1, len(frames) // MAX_REFERENCE_FRAMES)][
        :MAX_REFERENCE_FRAMES
    ]
    reference = np.median(np.stack(sample), axis=0).astype(np.uint8)
    focus = float(np.median([focus_measure(grey) for grey in sample]))
    luma = float(reference.mean())
    clipped = float(np.mean((reference <= _CLIP_LOW) | (reference >= _CLIP_HIGH)))
    items = [
        _focus_item(focus, limits),
        _luma_item(luma, limits),
        _clipped_item(clipped, limits),
        _noise_item(noise_sigma(frames), limits),
    ]
    if len(frames) >= 2 and seconds > 0:
        items.append(_fps_item((len(frames) - 1) / seconds, expected_fps, limits))
    return CheckResult(tuple(items), reference, len(frames), seconds)


def _focus_item(value: float, limits: Thresholds) -> Item:
    if value < limits.focus_fail:
        level, advice = Level.FAIL, "blurred: clean the lens and refocus"
    elif value < limits.focus_warn:
        level, advice = Level.WARN, "soft: check focus (or the scene is very plain)"
    else:
        level, advice = Level.OK, "sharp"
    return Item("focus", value, "Laplacian variance", level, advice)


def _luma_item(value: float, limits: Thresholds) -> Item:
    low, high = limits.luma_ok
    warn_low, warn_high = limits.luma_warn
    if warn_low <= value <= warn_high and not (low <= value <= high):
        level = Level.WARN
    elif low <= value <= high:
        level = Level.OK
    else:
        level = Level.FAIL
    if level is Level.OK:
        advice = "well exposed"
    elif value < low:
        advice = "too dark: add light, open the iris or raise the exposure"
    else:
        advice = "too bright: lower the exposure or shade the camera"
    return Item("exposure", value, "mean luma 0-255", level, advice)


def _clipped_item(value: float, limits: Thresholds) -> Item:
    if value >= limits.clipped_fail:
        level = Level.FAIL
    elif value >= limits.clipped_warn:
        level = Level.WARN
    else:
        level = Level.OK
    advice = (
        "little lost to black or white"
        if level is Level.OK
        else "much of the picture is pure black or white: enable WDR/backlight "
        "compensation or re-aim away from the sky and lamps"
    )
    return Item("clipping", value * 100.0, "% of pixels", level, advice)


def _noise_item(value: float, limits: Thresholds) -> Item:
    if value >= limits.noise_fail:
        level, advice = Level.FAIL, "very noisy: add light or lower the gain"
    elif value >= limits.noise_warn:
        level, advice = Level.WARN, "noisy: detections may flicker at night"
    else:
        level, advice = Level.OK, "clean"
    return Item("noise", value, "grey levels (sigma)", level, advice)


def _fps_item(value: float, expected: float | None, limits: Thresholds) -> Item:
    if expected is None:
        return Item("frame rate", value, "fps", Level.OK, "no source.fps to compare")
    ratio = value / expected
    if ratio < limits.fps_fail_ratio:
        level = Level.FAIL
    elif ratio < limits.fps_warn_ratio:
        level = Level.WARN
    else:
        level = Level.OK
    advice = (
        f"as configured ({expected:g} fps)"
        if level is Level.OK
        else f"below the configured {expected:g} fps: check the camera's stream "
        "settings and the network"
    )
    return Item("frame rate", value, "fps", level, advice)


def save_reference(reference: npt.NDArray[np.uint8], path: Path) -> None:
    """Write the reference frame as a greyscale PNG.

    Raises:
        CheckError: when the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), reference):
        raise CheckError(f"cannot write the reference frame {path}")
