"""Motion detection on a small greyscale copy of each frame, to gate inference.

The detector keeps a running-average background (`cv2.accumulateWeighted`),
thresholds the absolute difference to it, dilates, and turns contours into
boxes in frame pixels. Three guards keep it from firing all the time:

- camera noise: a pixel threshold after a Gaussian blur, a minimum contour
  area, and motion that must persist for a number of consecutive frames;
- lighting: when more than `lighting_fraction` of the picture changes at once
  (lights switched, auto-exposure, a cloud), the background is re-learned
  from the current frame and the frame is not motion. Frigate's motion
  setting `lightning_threshold` (0.8 in its reference config) works alike;
- slow changes (shadows, dusk) are absorbed by the running average.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.types import Image

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


class MotionError(ValueError):
    """A motion setting or input is invalid; the message names it and the fix."""


class MotionConfig(BaseModel):
    """When and where detection runs: motion gating, detection rate, re-checks."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    gating: bool = Field(
        default=False,
        description=(
            "Run the detector only on frames with motion (plus the periodic full "
            "detection). Saves most inference on quiet scenes; tracks coast on "
            "skipped frames."
        ),
    )
    detect_on: Literal["full", "regions"] = Field(
        default="full",
        description=(
            "On motion, detect on the whole frame ('full') or on crops around the "
            "motion boxes, each at least the model's input size ('regions'). "
            "Regions find small distant objects at full resolution but cost one "
            "inference per crop, and tracks outside the crops age as if missed "
            "until the next full detection."
        ),
    )
    target_fps: float | None = Field(
        default=None,
        gt=0,
        le=120,
        description=(
            "Highest detection rate on live sources, in detections per second; "
            "the tracker carries objects between detections. Lower saves CPU "
            "for more cameras; below about 5 fast objects may be lost. Files "
            "ignore it and keep every frame."
        ),
    )
    max_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "Longest stream time between two full-frame detections, so objects "
            "that stopped moving are re-confirmed. Lower re-checks parked "
            "objects sooner at the cost of more inference on quiet scenes."
        ),
    )
    width: int = Field(
        default=240,
        ge=64,
        le=640,
        description=(
            "Width in pixels of the greyscale copy that motion is computed on. "
            "Wider sees smaller motion and costs more CPU."
        ),
    )
    threshold: int = Field(
        default=25,
        ge=1,
        le=255,
        description=(
            "Grey-level difference from the background that counts as changed. "
            "Lower is more sensitive and more prone to sensor noise."
        ),
    )
    min_area_fraction: float = Field(
        default=0.0005,
        ge=0,
        lt=1,
        description=(
            "Smallest motion contour, as a fraction of the frame area. Raise it "
            "to ignore leaves and rain; lower it for distant small objects."
        ),
    )
    persistence_frames: int = Field(
        default=2,
        ge=1,
        le=100,
        description=(
            "Consecutive frames that must show motion before it gates the "
            "detector on. Higher ignores single-frame noise and flicker but "
            "starts detection later."
        ),
    )
    hold_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description=(
            "Seconds detection keeps running after the last motion, so tracks "
            "get a final update as objects stop or leave."
        ),
    )
    background_alpha: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description=(
            "Weight of each new frame in the running-average background. Higher "
            "adapts faster to slow light changes and also absorbs slow objects."
        ),
    )
    lighting_fraction: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description=(
            "Fraction of the frame that must change at once to be taken as a "
            "lighting change: the background is re-learned and no motion is "
            "reported. Lower re-learns on smaller global changes."
        ),
    )
    max_regions: int = Field(
        default=4,
        ge=1,
        le=32,
        description=(
            "Most crops per frame in 'regions' mode; with more motion boxes the "
            "whole frame is detected instead."
        ),
    )

    @model_validator(mode="after")
    def _rate_within_interval(self) -> MotionConfig:
        if self.target_fps is not None and 1.0 / self.target_fps > self.max_interval_s:
            raise ValueError(
                f"target_fps {self.target_fps} gives one detection every "
                f"{1.0 / self.target_fps:.2f} s, longer than max_interval_s "
                f"{self.max_interval_s}; raise target_fps or max_interval_s"
            )
        return self


@dataclass(frozen=True, slots=True)
class MotionResult:
    """Motion found on one frame.

    Attributes:
        boxes: motion boxes in frame pixels (xyxy), empty when there is no
            persistent motion.
        changed_fraction: fraction of the small picture above the threshold,
            before the contour filter.
        lighting_change: True when the frame was taken as a lighting change
            and the background was re-learned.
    """

    boxes: tuple[Box, ...]
    changed_fraction: float
    lighting_change: bool = False

    @property
    def moving(self) -> bool:
        """True when there is persistent motion."""
        return bool(self.boxes)


class MotionDetector:
    """Running-average background subtraction on a downscaled greyscale frame.

    Buffers for the small picture are allocated once per frame size and
    reused. Not thread-safe: use one detector per camera.

    Args:
        config: thresholds and sizes; see `MotionConfig`.
    """

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._frame_wh: tuple[int, int] | None = None
        self._small_wh = (0, 0)
        self._background: npt.NDArray[np.float32] | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._streak = 0
        self.lighting_changes = 0

    def reset(self) -> None:
        """Forget the background; the next frame starts a new one."""
        self._background = None
        self._streak = 0

    def update(self, image: Image) -> MotionResult:
        """Compare a BGR frame with the background, then blend it in.

        Raises:
            MotionError: the image is not an (H, W, 3) uint8 array.
        """
        gray = self._prepare(image)
        background = self._background
        if background is None:
            self._background = gray.astype(np.float32)
            return MotionResult((), 0.0)

        cv2.absdiff(gray, cv2.convertScaleAbs(background), dst=self._diff)
        cv2.threshold(
            self._diff, self.config.threshold, 255, cv2.THRESH_BINARY, dst=self._mask
        )
        changed = cv2.countNonZero(self._mask) / self._mask.size
        if changed >= self.config.lighting_fraction:
            return self._relearn(gray, changed)

        boxes = self._boxes()
        cv2.accumulateWeighted(gray, background, self.config.background_alpha)
        self._streak = self._streak + 1 if boxes else 0
        if self._streak < self.config.persistence_frames:
            return MotionResult((), changed)
        return MotionResult(boxes, changed)

    def _prepare(self, image: Image) -> npt.NDArray[np.uint8]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MotionError(
                f"motion needs a BGR uint8 frame of shape (H, W, 3), got "
                f"{image.dtype} {image.shape}; convert the frame first"
            )
        frame_wh = (int(image.shape[1]), int(image.shape[0]))
        if frame_wh != self._frame_wh:
            self._allocate(frame_wh)
        cv2.resize(image, self._small_wh, dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._gray)
        cv2.GaussianBlur(self._gray, (5, 5), 0, dst=self._gray)
        return self._gray

    def _allocate(self, frame_wh: tuple[int, int]) -> None:
        width = min(self.config.width, frame_wh[0])
        height = max(1, round(frame_wh[1] * width / frame_wh[0]))
        if self._frame_wh is not None:
            logger.info(
                "frame size changed from %dx%d to %dx%d; motion background reset",
                *self._frame_wh,
                *frame_wh,
            )
        self._frame_wh = frame_wh
        self._small_wh = (width, height)
        self._small = np.empty((height, width, 3), dtype=np.uint8)
        self._gray = np.empty((height, width), dtype=np.uint8)
        self._diff = np.empty((height, width), dtype=np.uint8)
        self._mask = np.empty((height, width), dtype=np.uint8)
        self._min_area = self.config.min_area_fraction * width * height
        self.reset()

    def _relearn(self, gray: npt.NDArray[np.uint8], changed: float) -> MotionResult:
        self.lighting_changes += 1
        logger.info(
            "%.0f %% of the picture changed at once (lighting_fraction %.2f); "
            "motion background re-learned",
            100.0 * changed,
            self.config.lighting_fraction,
        )
        assert self._background is not None  # noqa: S101
        self._background[...] = gray
        self._streak = 0
        return MotionResult((), changed, lighting_change=True)

    def _boxes(self) -> tuple[Box, ...]:
        cv2.dilate(self._mask, self._kernel, dst=self._mask, iterations=2)
        contours, _ = cv2.findContours(
            self._mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        assert self._frame_wh is not None  # noqa: S101
        scale = self._frame_wh[0] / self._small_wh[0]
        boxes = []
        for contour in contours:
            if cv2.contourArea(contour) < self._min_area:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append(_scale_box((x, y, x + w, y + h), scale, self._frame_wh))
        return tuple(boxes)


def _scale_box(box: Box, scale: float, frame_wh: tuple[int, int]) -> Box:
    left, top, right, bottom = box
    return (
        max(0, int(left * scale)),
        max(0, int(top * scale)),
        min(frame_wh[0], int(np.ceil(right * scale))),
        min(frame_wh[1], int(np.ceil(bottom * scale))),
    )


def plan_regions(
    boxes: tuple[Box, ...],
    frame_wh: tuple[int, int],
    crop_wh: tuple[int, int],
    max_regions: int,
) -> tuple[Box, ...] | None:
    """Turn motion boxes into crops of at least `crop_wh`, merged where they overlap.

    Each crop is centred on its motion box, grown to the model input size so
    that the detector gets it at full resolution, and shifted to stay inside
    the frame. Overlapping crops are merged into their bounding box.

    Returns:
        The crops in frame pixels, or None when the whole frame should be
        detected instead: more than `max_regions` crops, or crops that
        together cover at least half the frame.
    """
    crops = [_grow(box, frame_wh, crop_wh) for box in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                if _overlap(crops[i], crops[j]):
                    crops[i] = _union(crops[i], crops.pop(j))
                    merged = True
                    break
            if merged:
                break
    area = sum((r - left) * (b - t) for left, t, r, b in crops)
    if len(crops) > max_regions or area * 2 >= frame_wh[0] * frame_wh[1]:
        return None
    return tuple(crops)


def _grow(box: Box, frame_wh: tuple[int, int], crop_wh: tuple[int, int]) -> Box:
    left, top, right, bottom = box
    width = min(frame_wh[0], max(right - left, crop_wh[0]))
    height = min(frame_wh[1], max(bottom - top, crop_wh[1]))
    x0 = min(max(0, (left + right - width) // 2), frame_wh[0] - width)
    y0 = min(max(0, (top + bottom - height) // 2), frame_wh[1] - height)
    return (x0, y0, x0 + width, y0 + height)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
