"""Detector used by the model-tooling tests, and checks that it finds people.

The tests use `edge.detector.Detector` when it is importable. Until then a
minimal YOLOv8 decoder stands in: letterbox with the detector's own code,
one ONNX Runtime session, score threshold and class-aware NMS.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edge.types import Detections
from models.evaluate import Detect
from models.frames import letterbox, read_frames


class MinimalDetector:
    """Stand-in YOLOv8 detector for tests; not the node's detector."""

    def __init__(self, path: Path, confidence: float = 0.25, iou: float = 0.5) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.size = int(model_input.shape[2])
        self.confidence = confidence
        self.iou = iou

    def detect(self, image: np.ndarray) -> Detections:
        tensor, transform = letterbox(image, self.size)
        rows = self.session.run(None, {self.input_name: tensor})[0][0].T
        scores = rows[:, 4:]
        class_id = scores.argmax(axis=1)
        confidence = scores[np.arange(len(rows)), class_id]
        keep = confidence >= self.confidence
        rows, class_id, confidence = rows[keep], class_id[keep], confidence[keep]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        offset = class_id[:, None] * 4096.0
        boxes = [
            (float(a), float(b), float(c - a), float(d - b))
            for a, b, c, d in xyxy + offset
        ]
        kept = cv2.dnn.NMSBoxes(boxes, confidence.tolist(), self.confidence, self.iou)
        index = np.array(kept, dtype=np.int64).reshape(-1)
        return Detections(
            transform.to_frame(xyxy[index]),
            confidence[index].astype(np.float32),
            class_id[index].astype(np.int64),
        )


def make_detector(path: Path, confidence: float = 0.25) -> Detect:
    """Return the node's detector when available, else the stand-in."""
    try:
        from edge.detector import Detector
    except ImportError:
        return MinimalDetector(path, confidence).detect
    return Detector(path, confidence=confidence).detect


@pytest.mark.media
def test_detector_finds_people_on_vtest(model_640: Path, vtest_avi: Path) -> None:
    frames = read_frames([vtest_avi], 2)
    detect = make_detector(model_640)
    persons = [int((detect(f.image).class_id == 0).sum()) for f in frames]
    assert min(persons) >= 3
