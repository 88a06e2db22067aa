"""Turning one image's raw output into scored candidate boxes.

Each layout of `formats.OutputFormat` is reduced to the same steps: pick the
best allowed class per row, keep rows whose score reaches that class's
threshold, then convert only the kept rows' boxes to `xyxy` in model-input
pixels. Thresholding before box conversion keeps the cost proportional to
the few rows that survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.detector.formats import OutputFormat, OutputLayout, yolox_grid
from edge.types import FloatArray, IntArray

ScoreArray = npt.NDArray[np.floating]


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    """Allowed classes and the minimum score of each class.

    Attributes:
        thresholds: float32 (C,) minimum score per class id.
        class_ids: sorted int64 ids of the allowed classes, or None for all.
    """

    thresholds: FloatArray
    class_ids: IntArray | None = None

    @property
    def min_threshold(self) -> float:
        """Lowest threshold over the allowed classes; rows below it are skipped."""
        if self.class_ids is None:
            return float(self.thresholds.min())
        return float(self.thresholds[self.class_ids].min())


@dataclass(frozen=True, slots=True)
class Candidates:
    """Boxes above threshold, before NMS, in model-input pixels."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray


class OutputDecoder:
    """Decoder of one output layout for one model input size.

    Args:
        layout: the recognised layout.
        input_wh: model input width and height (for the YOLOX grid).
        score_filter: allowed classes and thresholds.
    """

    def __init__(
        self, layout: OutputLayout, input_wh: tuple[int, int], score_filter: ScoreFilter
    ) -> None:
        self.layout = layout
        self.score_filter = score_filter
        self._grid: tuple[FloatArray, FloatArray] | None = None
        if layout.format is OutputFormat.YOLOX_RAW:
            self._grid = yolox_grid(input_wh)

    def decode(self, output: ScoreArray) -> Candidates:
        """Decode one image's output, shape (rows, columns) without batch axis."""
        fmt = self.layout.format
        if fmt is OutputFormat.END2END:
            return self._decode_end2end(output)
        if fmt is OutputFormat.ULTRALYTICS:
            return self._decode_scores(output[:4], output[4:], None)
        if fmt is OutputFormat.ULTRALYTICS_TRANSPOSED:
            return self._decode_scores(output[:, :4].T, output[:, 4:].T, None)
        return self._decode_scores(output[:, :4].T, output[:, 5:].T, output[:, 4])

    def _decode_scores(
        self, boxes: ScoreArray, scores: ScoreArray, objectness: ScoreArray | None
    ) -> Candidates:
        """Decode class-major arrays: boxes (4, N) cx, cy, w, h and scores (C, N)."""
        class_ids = self.score_filter.class_ids
        if class_ids is not None:
            scores = scores[class_ids]

        best = scores.max(axis=0)
        if objectness is not None:
            best = best * objectness
        rows = np.flatnonzero(best >= self.score_filter.min_threshold)
        confidence = best[rows]
        classes = scores[:, rows].argmax(axis=0).astype(np.int64)
        if class_ids is not None:
            classes = class_ids[classes]

        passed = confidence >= self.score_filter.thresholds[classes]
        rows, confidence, classes = rows[passed], confidence[passed], classes[passed]
        cxcywh = np.asarray(boxes[:, rows], dtype=np.float32).T
        if self._grid is not None:
            cxcywh = _decode_yolox_grid(cxcywh, rows, self._grid)
        return Candidates(
            xyxy=_cxcywh_to_xyxy(cxcywh),
            confidence=confidence.astype(np.float32),
            class_id=classes,
        )

    def _decode_end2end(self, output: ScoreArray) -> Candidates:
        thresholds = self.score_filter.thresholds
        confidence = output[:, 4].astype(np.float32)
        classes = np.rint(output[:, 5]).astype(np.int64)
        # Padding rows of fixed-K exports carry score 0 and may carry any class.
        known = (classes >= 0) & (classes < thresholds.size)
        if self.score_filter.class_ids is not None:
            known &= np.isin(classes, self.score_filter.class_ids)
        rows = np.flatnonzero(known)
        rows = rows[confidence[rows] >= thresholds[classes[rows]]]
        return Candidates(
            xyxy=np.asarray(output[rows, :4], dtype=np.float32),
            confidence=confidence[rows],
            class_id=classes[rows],
        )


def _decode_yolox_grid(
    raw: FloatArray, rows: npt.NDArray[np.intp], grid: tuple[FloatArray, FloatArray]
) -> FloatArray:
    """Turn YOLOX cell offsets and log sizes of `rows` into input-pixel cx, cy, w, h."""
    cells, strides = grid
    stride = strides[rows, None]
    decoded = np.empty_like(raw)
    decoded[:, :2] = (raw[:, :2] + cells[rows]) * stride
    with np.errstate(over="ignore"):
        # An overflowing exp gives inf, and such rows are dropped as non-finite.
        decoded[:, 2:] = np.exp(raw[:, 2:]) * stride
    return decoded


def _cxcywh_to_xyxy(cxcywh: FloatArray) -> FloatArray:
    half = cxcywh[:, 2:] / 2.0
    return np.concatenate((cxcywh[:, :2] - half, cxcywh[:, :2] + half), axis=1)
