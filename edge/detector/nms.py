"""Class-wise non-maximum suppression in numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.types import IntArray

# Cap on boxes entering NMS, as in Ultralytics (max_nms): a very low
# threshold on a busy frame must not make suppression quadratic in time.
MAX_NMS_CANDIDATES = 30_000


def nms_per_class(
    xyxy: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    class_id: npt.NDArray[np.integer],
    *,
    iou_threshold: float,
    max_keep: int,
) -> IntArray:
    """Run greedy NMS separately within each class.

    A box is suppressed when its IoU with a higher-scoring kept box of the
    same class is greater than `iou_threshold`. Ties in score keep input
    order (stable sort), so results are deterministic.

    Args:
        xyxy: boxes (N, 4) as left, top, right, bottom.
        scores: scores (N,).
        class_id: class ids (N,).
        iou_threshold: overlap above which the lower box goes; lower values
            remove more overlapping boxes, 1.0 disables suppression.
        max_keep: stop after this many boxes are kept.

    Returns:
        int64 indices into the inputs of the kept boxes, best score first.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    order = order[:MAX_NMS_CANDIDATES]
    # float64 keeps IoU exact enough that ties at the threshold do not flip.
    boxes = np.asarray(xyxy, dtype=np.float64)[order]
    classes = np.asarray(class_id)[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    kept: list[int] = []
    remaining = np.arange(order.size)
    while remaining.size and len(kept) < max_keep:
        best, rest = remaining[0], remaining[1:]
        kept.append(int(best))
        iou = _iou_one_to_many(boxes[best], areas[best], boxes[rest], areas[rest])
        suppressed = (iou > iou_threshold) & (classes[rest] == classes[best])
        remaining = rest[~suppressed]
    return order[np.asarray(kept, dtype=np.int64)].astype(np.int64)


def _iou_one_to_many(
    box: npt.NDArray[np.float64],
    area: np.float64,
    others: npt.NDArray[np.float64],
    other_areas: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    intersection = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    union = area + other_areas - intersection
    iou: npt.NDArray[np.float64] = np.divide(
        intersection, union, out=np.zeros_like(intersection), where=union > 0.0
    )
    return iou
