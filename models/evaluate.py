"""Accuracy of a candidate model against a reference model or ground truth.

AP is the COCO-style 101-point interpolated average precision at IoU 0.5:
precision is made monotone (each point takes the best precision at any higher
recall) and sampled at recall 0.00, 0.01, ..., 1.00. Classes that the
reference never contains are left out of the mean, as COCO does. Matching is
greedy by descending candidate confidence, one reference box per candidate,
same class only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.types import Detections

logger = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Detect = Callable[[Image], Detections]
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


class EvaluationError(ValueError):
    """Inputs to an evaluation are missing or inconsistent."""


@dataclass(frozen=True, slots=True)
class ClassScore:
    """Accuracy on one class.

    Attributes:
        class_id: class index of the model.
        ap50: average precision at IoU 0.5 (101-point).
        recall: share of reference boxes matched by some candidate box.
        reference_boxes: number of reference boxes of this class.
        candidate_boxes: number of candidate boxes of this class.
    """

    class_id: int
    ap50: float
    recall: float
    reference_boxes: int
    candidate_boxes: int


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Accuracy over a set of frames.

    Attributes:
        map50: mean of `ap50` over classes present in the reference; 0.0 when
            the reference has no boxes at all.
        classes: per-class scores, by class id.
        frames: number of frames compared.
    """

    map50: float
    classes: tuple[ClassScore, ...]
    frames: int

    @property
    def reference_boxes(self) -> int:
        """Number of reference boxes over all classes."""
        return sum(score.reference_boxes for score in self.classes)

    @property
    def candidate_boxes(self) -> int:
        """Number of candidate boxes over all classes."""
        return sum(score.candidate_boxes for score in self.classes)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a model may be deployed, and why.

    Attributes:
        usable: False when roll-out must reject the model.
        reason: one sentence naming the numbers behind the decision.
        evaluation: accuracy against the reference, when one was given.
    """

    usable: bool
    reason: str
    evaluation: Evaluation | None = field(default=None)


def box_iou(
    boxes: npt.NDArray[np.float32], other: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Return the IoU matrix (len(boxes), len(other)) of `xyxy` boxes."""
    left = np.maximum(boxes[:, None, 0], other[None, :, 0])
    top = np.maximum(boxes[:, None, 1], other[None, :, 1])
    right = np.minimum(boxes[:, None, 2], other[None, :, 2])
    bottom = np.minimum(boxes[:, None, 3], other[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_other = (other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1])
    union = area[:, None] + area_other[None, :] - inter
    iou: npt.NDArray[np.float32] = (inter / np.maximum(union, 1e-9)).astype(np.float32)
    return iou


def _match_frame(
    candidate: Detections, reference: Detections, class_id: int, iou: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]:
    """Match one frame's boxes of one class; return scores, hit flags, count."""
    cand = candidate.select(candidate.class_id == class_id)
    ref = reference.select(reference.class_id == class_id)
    order = np.argsort(-cand.confidence, kind="stable")
    hits = np.zeros(len(cand), dtype=bool)
    if len(ref) and len(cand):
        overlaps = box_iou(cand.xyxy[order], ref.xyxy)
        taken = np.zeros(len(ref), dtype=bool)
        for row, row_ious in enumerate(overlaps):
            free = np.where(taken, -1.0, row_ious)
            best = int(np.argmax(free))
            if free[best] >= iou:
                taken[best] = True
                hits[row] = True
    return cand.confidence[order], hits, len(ref)


def average_precision(
    scores: npt.NDArray[np.float32], hits: npt.NDArray[np.bool_], positives: int
) -> tuple[float, float]:
    """Return 101-point AP and final recall from scored matches.

    Args:
        scores: confidence of every candidate box.
        hits: whether each candidate box matched a reference box.
        positives: number of reference boxes.
    """
    if positives == 0:
        return 0.0, 0.0
    order = np.argsort(-scores, kind="stable")
    true_pos = np.cumsum(hits[order])
    false_pos = np.cumsum(~hits[order])
    recall = true_pos / positives
    precision = true_pos / np.maximum(true_pos + false_pos, 1)
    if len(recall) == 0:
        return 0.0, 0.0
    # Monotone envelope: precision at recall r is the best at any recall >= r.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    sampled = [
        envelope[np.searchsorted(recall, point, side="left")]
        if point <= recall[-1]
        else 0.0
        for point in RECALL_POINTS
    ]
    return float(np.mean(sampled)), float(recall[-1])


def compare(
    candidate: Sequence[Detections],
    reference: Sequence[Detections],
    iou: float = 0.5,
    min_reference_boxes: int = 1,
) -> Evaluation:
    """Score per-frame candidate detections against reference detections.

    Classes with fewer than `min_reference_boxes` reference boxes are left
    out of the mean: with one or two boxes, a single near-threshold box that
    the reference scored just below its threshold swings AP by 0.5.

    Raises:
        EvaluationError: the two sequences differ in length.
    """
    if len(candidate) != len(reference):
        raise EvaluationError(
            f"candidate has {len(candidate)} frames and reference "
            f"{len(reference)}; both must cover the same frames"
        )
    class_ids = sorted({int(c) for d in (*candidate, *reference) for c in d.class_id})
    scores = []
    for class_id in class_ids:
        parts = [
            _match_frame(c, r, class_id, iou)
            for c, r in zip(candidate, reference, strict=True)
        ]
        confidences = np.concatenate([p[0] for p in parts]).astype(np.float32)
        hits = np.concatenate([p[1] for p in parts]).astype(bool)
        positives = sum(p[2] for p in parts)
        ap50, recall = average_precision(confidences, hits, positives)
        scores.append(ClassScore(class_id, ap50, recall, positives, len(hits)))
    floor = max(1, min_reference_boxes)
    present = [s.ap50 for s in scores if s.reference_boxes >= floor]
    map50 = float(np.mean(present)) if present else 0.0
    return Evaluation(map50, tuple(scores), len(candidate))


def evaluate(
    candidate: Detect,
    reference: Detect | Sequence[Detections],
    images: Sequence[Image],
    iou: float = 0.5,
    min_reference_boxes: int = 1,
) -> Evaluation:
    """Run a candidate detector on `images` and score it.

    Args:
        candidate: detector under test.
        reference: detector whose output counts as truth, or ground truth
            per image (see `load_mot_ground_truth`).
        images: BGR frames.
        iou: minimum IoU for a candidate box to match a reference box.
        min_reference_boxes: see `compare`.
    """
    found = [candidate(image) for image in images]
    if callable(reference):
        truth = [reference(image) for image in images]
    else:
        truth = list(reference)
    return compare(found, truth, iou, min_reference_boxes)


def load_mot_ground_truth(
    path: Path, frame_numbers: Sequence[int], class_id: int = 0
) -> list[Detections]:
    """Read MOTChallenge gt.txt boxes for the given 1-based frame numbers.

    Lines are `frame,id,left,top,width,height,...`. A seventh column of 0
    marks an ignored box in MOT16 and later and is skipped; MOT15 uses -1.

    Raises:
        EvaluationError: the file is missing or a line is malformed.
    """
    if not path.is_file():
        raise EvaluationError(f"ground truth file {path} does not exist")
    boxes: dict[int, list[list[float]]] = {n: [] for n in frame_numbers}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            frame, left, top, width, height = (
                int(fields[0]),
                *(float(v) for v in fields[2:6]),
            )
            flag = float(fields[6]) if len(fields) > 6 else -1.0
        except (ValueError, IndexError) as error:
            raise EvaluationError(
                f"{path} line {number} is not `frame,id,left,top,width,height`: "
                f"{line!r}"
            ) from error
        if frame in boxes and flag != 0:
            boxes[frame].append([left, top, left + width, top + height])
    result = []
    for n in frame_numbers:
        xyxy = np.array(boxes[n], dtype=np.float32).reshape(-1, 4)
        result.append(
            Detections(
                xyxy,
                np.ones(len(xyxy), dtype=np.float32),
                np.full(len(xyxy), class_id, dtype=np.int64),
            )
        )
    return result


def check_model_usable(  # noqa: PLR0911 one return per rejection reason
    candidate: Detect,
    frames: Sequence[Image],
    reference: Detect | None = None,
    *,
    min_map50: float = 0.5,
) -> Verdict:
    """Decide whether a model may be rolled out to nodes.

    Rejects a model that detects nothing where the reference detects objects,
    and one whose mAP@0.5 against the reference is below `min_map50`. Without
    a reference, the only check is that the model detects something on the
    frames, so pass frames that do contain objects.

    Args:
        candidate: the model to deploy, as a detector.
        frames: BGR frames from the site or a representative clip.
        reference: the model currently trusted, as a detector.
        min_map50: lowest acceptable mAP@0.5 against the reference; raising
            it rejects more aggressive quantisations.
    """
    if not frames:
        return Verdict(False, "no frames given; cannot check the model")
    if reference is None:
        found = sum(len(candidate(image)) for image in frames)
        if found == 0:
            return Verdict(False, f"model detects nothing on {len(frames)} frames")
        return Verdict(True, f"model detects {found} objects on {len(frames)} frames")
    result = evaluate(candidate, reference, frames)
    if result.reference_boxes > 0 and result.candidate_boxes == 0:
        reason = (
            f"model detects nothing on {len(frames)} frames where the reference "
            f"detects {result.reference_boxes} objects"
        )
        return Verdict(False, reason, result)
    if result.reference_boxes == 0:
        reason = (
            f"reference detects nothing on {len(frames)} frames; "
            "choose frames with objects"
        )
        return Verdict(False, reason, result)
    if result.map50 < min_map50:
        reason = (
            f"mAP@0.5 {result.map50:.3f} against the reference is below {min_map50:.3f}"
        )
        return Verdict(False, reason, result)
    reason = f"mAP@0.5 {result.map50:.3f} against the reference on {len(frames)} frames"
    return Verdict(True, reason, result)


def load_detector(
    path: Path,
    *,
    confidence: float = 0.25,
    threads: int = 2,
    classes: Sequence[str] | None = None,
) -> Detect:
    """Load a model with the edge node's detector, as the node will run it.

    Args:
        path: ONNX model file.
        confidence: score threshold; lower keeps more of the PR curve.
        threads: ONNX Runtime intra-op threads.
        classes: class names to keep, as in a node's detection.classes; None
            keeps every class of the model.
    """
    from edge.detector import Detector  # noqa: PLC0415 heavy, CLI-only use

    detector = Detector(
        path,
        confidence=confidence,
        intra_op_threads=threads,
        classes=list(classes) if classes else None,
    )
    return detector.detect
