"""IoU between boxes and gated one-to-one assignment of tracks to detections."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

try:
    from scipy.optimize import linear_sum_assignment
except ImportError:  # pragma: no cover - scipy is a declared dependency
    linear_sum_assignment = None
    logger.info("scipy is not installed; the tracker uses greedy assignment")

# Cost of a pair that the gate forbids; far above any 1 - IoU cost.
_FORBIDDEN_COST = 1e6


def iou_matrix(boxes_a: Array, boxes_b: Array) -> Array:
    """Return the (N, M) intersection over union of `xyxy` boxes.

    Boxes without area have an IoU of 0 with everything.
    """
    if boxes_a.shape[0] == 0 or boxes_b.shape[0] == 0:
        return np.zeros((boxes_a.shape[0], boxes_b.shape[0]))
    left = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    top = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    right = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    bottom = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def _greedy(cost: Array) -> tuple[IndexArray, IndexArray]:
    """Pair rows and columns by increasing cost, each used at most once."""
    order = np.argsort(cost, axis=None, kind="stable")
    rows_used: set[int] = set()
    cols_used: set[int] = set()
    rows: list[int] = []
    cols: list[int] = []
    for flat in order:
        row, col = divmod(int(flat), cost.shape[1])
        if row in rows_used or col in cols_used:
            continue
        rows_used.add(row)
        cols_used.add(col)
        rows.append(row)
        cols.append(col)
    return np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)


def assign(
    iou: Array,
    min_iou: float,
    allowed: BoolArray | None = None,
    *,
    greedy: bool = False,
) -> tuple[IndexArray, IndexArray]:
    """Pair tracks (rows) with detections (columns) to maximise the total IoU.

    Args:
        iou: (N, M) IoU of predicted track boxes and detection boxes.
        min_iou: gate; pairs below it are never matched.
        allowed: optional (N, M) mask; False forbids a pair, for example a
            track and a detection of different classes.
        greedy: use greedy assignment even when scipy is installed.

    Returns:
        Row indices and column indices of the matched pairs, of equal length.
    """
    feasible = iou >= min_iou
    if allowed is not None:
        feasible &= allowed
    if not feasible.any():
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    cost = np.where(feasible, 1.0 - iou, _FORBIDDEN_COST)
    if greedy or linear_sum_assignment is None:
        rows, cols = _greedy(cost)
    else:
        rows, cols = linear_sum_assignment(cost)
    keep = feasible[rows, cols]
    return rows[keep].astype(np.intp), cols[keep].astype(np.intp)
