"""Privacy masks: polygons blacked out in the frame before anything reads it."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.types import Image

Polygon = Sequence[tuple[float, float]]


class PrivacyMask:
    """Blacks out polygons (windows of homes, private gardens) in place.

    The pipeline applies it right after decoding, so the detector, previews and
    evidence images never see the masked pixels.
    """

    def __init__(
        self, polygons: Sequence[Polygon], resolution_wh: tuple[int, int]
    ) -> None:
        self.resolution_wh = resolution_wh
        self._polygons = [
            np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32)
            for polygon in polygons
        ]

    def __bool__(self) -> bool:
        return bool(self._polygons)

    def apply(self, image: Image) -> Image:
        """Fill every mask polygon of `image` with black and return it."""
        if self._polygons:
            cv2.fillPoly(image, self._polygons, (0, 0, 0))
        return image

    def coverage(self) -> np.ndarray:
        """Return a boolean (height, width) array that is True where masked."""
        width, height = self.resolution_wh
        canvas = np.zeros((height, width), dtype=np.uint8)
        if self._polygons:
            cv2.fillPoly(canvas, self._polygons, 1)
        return canvas.astype(bool)
