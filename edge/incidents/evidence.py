"""Anonymised evidence JPEGs: people, vehicles and privacy masks pixelated.

The encoder works on a copy. Every person and vehicle box on the frame (all
tracks of those classes, not only the incident's) and every privacy-mask
polygon is pixelated in that copy before anything is encoded, so the raw
frame never leaves this module. OpenCV's JPEG encoder writes no EXIF or
other metadata segment; `render_evidence` checks the bytes and raises if one
ever appears.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.incidents.rules import Box, Point
from edge.types import Image

logger = logging.getLogger(__name__)

PRIVACY_CLASSES = frozenset({"person", "bicycle", "car", "motorcycle", "bus", "truck"})
# JPEG markers that carry metadata: APP1 (EXIF, XMP) to APP15, and COM.
_METADATA_MARKERS = frozenset(range(0xE1, 0xF0)) | {0xFE}


class EvidenceError(RuntimeError):
    """An evidence image that cannot be made within the limits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceSettings:
    """Limits of evidence images.

    Attributes:
        max_bytes: JPEG size cap; the image is re-encoded at lower quality,
            then smaller, until it fits. The wire schema allows 400,000
            base64 characters, about 300,000 bytes.
        max_width_px: images wider than this are scaled down first.
        quality: first JPEG quality tried (1-100).
        min_quality: lowest quality before the image is scaled down.
        privacy_classes: classes whose boxes are always pixelated.
        cells: a box is pixelated to at most this many cells along its
            longer side. Lower it for stronger anonymisation.
        margin: boxes grow by this share of their size on each side before
            pixelation, so limbs and mirrors outside the box are covered.
    """

    max_bytes: int = 150_000
    max_width_px: int = 960
    quality: int = 80
    min_quality: int = 35
    privacy_classes: frozenset[str] = PRIVACY_CLASSES
    cells: int = 6
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 1_000 <= self.max_bytes <= 300_000:
            raise EvidenceError(
                f"evidence max_bytes={self.max_bytes} is invalid; use 1000 to 300000 "
                "(the schema caps the base64 text at 400000 characters)"
            )
        if not 1 <= self.min_quality <= self.quality <= 100:
            raise EvidenceError(
                f"evidence quality={self.quality}, min_quality={self.min_quality} are "
                "invalid; use 1 <= min_quality <= quality <= 100"
            )
        if self.cells < 1:
            raise EvidenceError(
                f"evidence cells={self.cells} is invalid; use 1 or more"
            )


def anonymise(
    image: Image,
    boxes: Sequence[Box],
    masks: Sequence[Sequence[Point]],
    settings: EvidenceSettings,
) -> Image:
    """Return a copy of `image` with boxes and mask polygons pixelated."""
    result = image.copy()
    height, width = result.shape[:2]
    for box in boxes:
        left, top, right, bottom = _grown(box, settings.margin, width, height)
        if right > left and bottom > top:
            result[top:bottom, left:right] = _pixelated(
                result[top:bottom, left:right], settings.cells
            )
    for polygon in masks:
        _pixelate_polygon(result, polygon, settings.cells)
    return result


def render_evidence(
    image: Image,
    boxes: Sequence[Box],
    masks: Sequence[Sequence[Point]],
    settings: EvidenceSettings,
) -> dict[str, Any]:
    """Anonymise and encode one frame as the incident's `evidence` object.

    Args:
        image: BGR frame; it is not modified.
        boxes: every box to hide, in frame pixels.
        masks: privacy-mask polygons in frame pixels.
        settings: size and anonymisation limits.

    Raises:
        EvidenceError: when no encoding fits `max_bytes`, or the encoder
            wrote a metadata segment.
    """
    picture = anonymise(image, boxes, masks, settings)
    picture = _limit_width(picture, settings.max_width_px)
    jpeg, width, height = _encode_capped(picture, settings)
    if has_metadata(jpeg):
        raise EvidenceError(
            "the JPEG encoder wrote a metadata segment; evidence is not sent"
        )
    return {
        "content_type": "image/jpeg",
        "data_base64": base64.b64encode(jpeg).decode("ascii"),
        "anonymised": True,
        "width": width,
        "height": height,
    }


def has_metadata(jpeg: bytes) -> bool:
    """Return True when a JPEG has an EXIF, XMP, other APPn (n >= 1) or COM segment."""
    position = 2
    while position + 4 <= len(jpeg) and jpeg[position] == 0xFF:
        marker = jpeg[position + 1]
        if marker == 0xDA:
            return False
        if marker in _METADATA_MARKERS:
            return True
        length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        position += 2 + length
    return False


def _grown(
    box: Box, margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    grow_x = (right - left) * margin
    grow_y = (bottom - top) * margin
    return (
        max(0, int(np.floor(left - grow_x))),
        max(0, int(np.floor(top - grow_y))),
        min(width, int(np.ceil(right + grow_x))),
        min(height, int(np.ceil(bottom + grow_y))),
    )


def _pixelated(region: Image, cells: int) -> Image:
    height, width = region.shape[:2]
    scale = cells / max(width, height)
    small_w = max(1, round(width * scale))
    small_h = max(1, round(height * scale))
    small = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
    restored = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(restored, np.uint8)


def _pixelate_polygon(image: Image, polygon: Sequence[Point], cells: int) -> None:
    points = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32)
    if len(points) < 3:
        return
    height, width = image.shape[:2]
    left, top, box_w, box_h = cv2.boundingRect(points)
    right, bottom = min(width, left + box_w), min(height, top + box_h)
    left, top = max(0, left), max(0, top)
    if right <= left or bottom <= top:
        return
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [points], 255)
    pixelated = _pixelated(image[top:bottom, left:right], cells)
    inside = mask[top:bottom, left:right] > 0
    image[top:bottom, left:right][inside] = pixelated[inside]


def _limit_width(image: Image, max_width: int) -> Image:
    height, width = image.shape[:2]
    if width <= max_width:
        return image
    new_height = max(1, round(height * max_width / width))
    resized = cv2.resize(image, (max_width, new_height), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, np.uint8)


def _encode_capped(image: Image, settings: EvidenceSettings) -> tuple[bytes, int, int]:
    picture = image
    while True:
        height, width = picture.shape[:2]
        for quality in range(settings.quality, settings.min_quality - 1, -10):
            ok, buffer = cv2.imencode(
                ".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise EvidenceError(
                    f"JPEG encoding failed for an image of shape {picture.shape}"
                )
            if buffer.size <= settings.max_bytes:
                return bytes(buffer.tobytes()), int(width), int(height)
        if width <= 64:
            raise EvidenceError(
                f"evidence does not fit max_bytes={settings.max_bytes} even at 64 px "
                "wide; raise max_bytes"
            )
        logger.debug(
            "evidence over %d bytes at %dx%d; scaling down",
            settings.max_bytes,
            width,
            height,
        )
        smaller = cv2.resize(
            picture, (width * 3 // 4, height * 3 // 4), interpolation=cv2.INTER_AREA
        )
        picture = np.asarray(smaller, np.uint8)
