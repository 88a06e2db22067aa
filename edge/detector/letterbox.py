"""Letterbox preprocessing and its exact inverse.

A letterbox resizes a frame to fit the model input while keeping its aspect
ratio, then pads the rest with grey (114, as Ultralytics and YOLOX train).
`LetterboxTransform` records the geometry, so boxes found in model pixels can
be mapped back to frame pixels. `LetterboxBuffer` writes the pixels into a
pre-allocated NCHW tensor, so each frame costs one resize and one converting
copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.detector.errors import InvalidImageError
from edge.types import FloatArray, Image

PAD_VALUE = 114

_CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True, slots=True)
class LetterboxTransform:
    """Geometry of one letterbox, from frame pixels to model-input pixels.

    Attributes:
        frame_wh: width and height of the original frame.
        input_wh: width and height of the model input.
        resized_wh: size of the frame after resizing, before padding.
        pad_xy: left and top padding in model-input pixels.
    """

    frame_wh: tuple[int, int]
    input_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    pad_xy: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Horizontal and vertical resize factors (model pixels per frame pixel).

        They come from the rounded resized size that `cv2.resize` produced, so
        they can differ from each other in the last digits. Using both keeps
        the inverse exact.
        """
        return (
            self.resized_wh[0] / self.frame_wh[0],
            self.resized_wh[1] / self.frame_wh[1],
        )

    def to_frame(self, xyxy: npt.ArrayLike) -> FloatArray:
        """Map `xyxy` boxes from model-input pixels to frame pixels.

        Boxes are clipped to the frame, so a box that lies wholly in the
        padding collapses to zero width or height.

        Args:
            xyxy: array-like of shape (N, 4) in model-input pixels.

        Returns:
            float32 array (N, 4) in frame pixels, inside 0..width, 0..height.
        """
        boxes = np.array(xyxy, dtype=np.float64).reshape(-1, 4)
        scale_x, scale_y = self.scale_xy
        boxes[:, 0::2] = (boxes[:, 0::2] - self.pad_xy[0]) / scale_x
        boxes[:, 1::2] = (boxes[:, 1::2] - self.pad_xy[1]) / scale_y
        np.clip(boxes[:, 0::2], 0.0, self.frame_wh[0], out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0.0, self.frame_wh[1], out=boxes[:, 1::2])
        return boxes.astype(np.float32)

    def to_model(self, xyxy: npt.ArrayLike) -> FloatArray:
        """Map `xyxy` boxes from frame pixels to model-input pixels (no clipping).

        Args:
            xyxy: array-like of shape (N, 4) in frame pixels.

        Returns:
            float32 array (N, 4) in model-input pixels.
        """
        boxes = np.array(xyxy, dtype=np.float64).reshape(-1, 4)
        scale_x, scale_y = self.scale_xy
        boxes[:, 0::2] = boxes[:, 0::2] * scale_x + self.pad_xy[0]
        boxes[:, 1::2] = boxes[:, 1::2] * scale_y + self.pad_xy[1]
        return boxes.astype(np.float32)


def plan_letterbox(
    frame_wh: tuple[int, int], input_wh: tuple[int, int], *, centered: bool = True
) -> LetterboxTransform:
    """Compute the letterbox geometry of a frame for a model input.

    Frames smaller than the input are scaled up, as Ultralytics does at
    inference, so small objects keep as many pixels as the model can see.

    Args:
        frame_wh: frame width and height in pixels, both at least 1.
        input_wh: model input width and height in pixels, both at least 1.
        centered: split the padding evenly between both sides (Ultralytics,
            YOLOv5); when False, pad only right and bottom (YOLOX).

    Returns:
        The transform; with odd padding the extra pixel goes right or bottom.

    Raises:
        InvalidImageError: when a size is not positive.
    """
    frame_w, frame_h = frame_wh
    input_w, input_h = input_wh
    if min(frame_w, frame_h) < 1 or min(input_w, input_h) < 1:
        raise InvalidImageError(
            f"cannot letterbox frame of size {frame_w}x{frame_h} into model input "
            f"{input_w}x{input_h}; both sizes must be at least 1x1 pixels"
        )
    scale = min(input_w / frame_w, input_h / frame_h)
    resized_w = min(input_w, max(1, round(frame_w * scale)))
    resized_h = min(input_h, max(1, round(frame_h * scale)))
    pad_x = (input_w - resized_w) // 2 if centered else 0
    pad_y = (input_h - resized_h) // 2 if centered else 0
    return LetterboxTransform(
        frame_wh=(frame_w, frame_h),
        input_wh=(input_w, input_h),
        resized_wh=(resized_w, resized_h),
        pad_xy=(pad_x, pad_y),
    )


def as_bgr(image: Image) -> Image:
    """Return `image` as a 3-channel BGR uint8 array, converting if needed.

    Grayscale (H, W) or (H, W, 1) and BGRA (H, W, 4) frames are converted;
    3-channel frames are returned unchanged.

    Raises:
        InvalidImageError: when the array is empty, not uint8, or has another
            shape.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = getattr(image, "dtype", type(image).__name__)
        raise InvalidImageError(
            f"image must be a uint8 numpy array (BGR, as OpenCV decodes), got {kind}"
        )
    if image.size == 0:
        raise InvalidImageError(f"image is empty, shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    channels = image.shape[2] if image.ndim == 3 else 1
    conversions = {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}
    if image.ndim in (2, 3) and channels in conversions:
        return np.asarray(cv2.cvtColor(image, conversions[channels]), dtype=np.uint8)
    raise InvalidImageError(
        f"image shape {image.shape} is not (H, W, 3) BGR, (H, W, 4) BGRA or "
        "(H, W) grayscale"
    )


class LetterboxBuffer:
    """Pre-allocated letterbox canvas and NCHW input tensor.

    `fill` writes one frame into one batch slot of `tensor` and returns its
    transform. The grey padding is painted only when the frame size changes,
    so a steady stream costs one resize and one converting copy per frame.
    Not thread-safe: give each thread its own buffer. The tensor is reused,
    so consume it (run the model) before the next `fill` of the same slot.

    Args:
        input_wh: model input width and height.
        batch_size: number of slots in the tensor.
        channel_order: "rgb" (Ultralytics, YOLOv5) or "bgr" (YOLOX).
        pixel_scale: factor applied to 0..255 values; 1/255 gives 0..1.
        centered: centre the resized frame (see `plan_letterbox`).
        dtype: tensor element type, float32 or float16 as the model expects.
    """

    def __init__(
        self,
        input_wh: tuple[int, int],
        *,
        batch_size: int = 1,
        channel_order: str = "rgb",
        pixel_scale: float = 1.0 / 255.0,
        centered: bool = True,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        if channel_order not in _CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be one of {_CHANNEL_ORDERS}, got {channel_order!r}"
            )
        width, height = input_wh
        self.input_wh = (width, height)
        self.channel_order = channel_order
        self.centered = centered
        self.tensor: npt.NDArray[np.floating] = np.empty(
            (batch_size, 3, height, width), dtype=dtype
        )
        self._scale = self.tensor.dtype.type(pixel_scale)
        self._canvas = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
        self._plan: LetterboxTransform | None = None

    def fill(self, image: Image, slot: int = 0) -> LetterboxTransform:
        """Letterbox a BGR frame into batch slot `slot` of `tensor`.

        Args:
            image: BGR uint8 frame (grayscale and BGRA are converted).
            slot: batch index to write, 0 <= slot < batch size.

        Returns:
            The transform that maps model boxes of this slot back to the frame.
        """
        image = as_bgr(image)
        plan = self._plan_for(int(image.shape[1]), int(image.shape[0]))
        self._paint(image, plan)

        pixels = (
            self._canvas[..., ::-1] if self.channel_order == "rgb" else self._canvas
        )
        np.multiply(
            pixels.transpose(2, 0, 1),
            self._scale,
            out=self.tensor[slot],
            casting="unsafe",
        )
        return plan

    def _plan_for(self, frame_w: int, frame_h: int) -> LetterboxTransform:
        plan = self._plan
        if plan is not None and plan.frame_wh == (frame_w, frame_h):
            return plan
        plan = plan_letterbox((frame_w, frame_h), self.input_wh, centered=self.centered)
        # A new geometry leaves old picture pixels where the padding now is.
        self._canvas.fill(PAD_VALUE)
        self._plan = plan
        return plan

    def _paint(self, image: Image, plan: LetterboxTransform) -> None:
        left, top = plan.pad_xy
        width, height = plan.resized_wh
        region = self._canvas[top : top + height, left : left + width]
        if (width, height) == plan.frame_wh:
            region[...] = image
            return
        # INTER_LINEAR both ways, as Ultralytics' LetterBox does at validation,
        # so the model gets the resampling its accuracy was measured with.
        region[...] = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
