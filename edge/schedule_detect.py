"""Per-frame choice of whether and where the detector runs.

The rules, in order:

1. Live sources with `target_fps` skip frames that come sooner than one
   detection period after the last detection. Files keep every frame.
2. A full-frame detection runs on the first frame and whenever
   `max_interval_s` of stream time has passed since the last full one, so
   objects that stopped moving are re-confirmed.
3. With motion gating on, the detector runs only while there is motion (and
   `hold_s` after it), on the whole frame or on crops around the motion.
   Without gating it runs on every frame the rate allows.

Frames that skip detection are marked `detection_ran=False`; the tracker
then coasts its tracks and analytics do not read the frame as empty.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np

from edge.detector import Detector
from edge.detector.nms import nms_per_class
from edge.motion import Box, MotionConfig, MotionDetector, plan_regions
from edge.types import Detections, Frame

logger = logging.getLogger(__name__)

# Half a millisecond of slack so that a 10 fps target on a 10 fps stream runs
# on every frame despite rounding in container timestamps.
_RATE_SLACK_S = 0.0005


class Reason(enum.StrEnum):
    """Reason the scheduler ran or skipped detection on a frame."""

    FIRST = "first"
    INTERVAL = "interval"
    MOTION = "motion"
    EVERY_FRAME = "every_frame"
    RATE = "rate"
    STILL = "still"


@dataclass(frozen=True, slots=True)
class DetectionPlan:
    """The scheduler's decision for one frame.

    Attributes:
        run: True when the detector runs on this frame.
        regions: crops to detect on, in frame pixels; empty means the whole
            frame.
        reason: why the detector runs or not.
    """

    run: bool
    regions: tuple[Box, ...]
    reason: Reason


class DetectionScheduler:
    """Decides per frame whether detection runs, from motion, rate and interval.

    Not thread-safe: use one scheduler per camera.

    Args:
        config: motion gating, target rate and interval settings.
        live: True for cameras and streams; `target_fps` applies only then.
        input_wh: model input size, the minimum crop size in 'regions' mode.
    """

    def __init__(
        self, config: MotionConfig, *, live: bool, input_wh: tuple[int, int]
    ) -> None:
        self.config = config
        self.live = live
        self.input_wh = input_wh
        self.motion = MotionDetector(config) if config.gating else None
        self._last_run_s: float | None = None
        self._last_full_s: float | None = None
        self._last_motion_s: float | None = None
        self.counts: dict[Reason, int] = dict.fromkeys(Reason, 0)

    def plan(self, frame: Frame) -> DetectionPlan:
        """Decide for `frame`, and mark it with `detection_ran`.

        The motion detector receives every frame, including frames the rate
        limit skips, so its background stays current.
        """
        moving_boxes = self._motion_boxes(frame)
        decision = self._decide(frame, moving_boxes)
        frame.detection_ran = decision.run
        self.counts[decision.reason] += 1
        if decision.run:
            self._last_run_s = frame.pts_s
            if not decision.regions:
                self._last_full_s = frame.pts_s
        return decision

    def _motion_boxes(self, frame: Frame) -> tuple[Box, ...] | None:
        if self.motion is None:
            return None
        result = self.motion.update(frame.image)
        if result.moving:
            self._last_motion_s = frame.pts_s
        return result.boxes

    def _decide(self, frame: Frame, boxes: tuple[Box, ...] | None) -> DetectionPlan:
        now = frame.pts_s
        if self._rate_limited(now):
            return DetectionPlan(False, (), Reason.RATE)
        if self._last_full_s is None:
            return DetectionPlan(True, (), Reason.FIRST)
        if now - self._last_full_s >= self.config.max_interval_s:
            return DetectionPlan(True, (), Reason.INTERVAL)
        if boxes is None:
            return DetectionPlan(True, (), Reason.EVERY_FRAME)
        if not self._in_motion(now):
            return DetectionPlan(False, (), Reason.STILL)
        return DetectionPlan(True, self._regions(frame, boxes), Reason.MOTION)

    def _rate_limited(self, now: float) -> bool:
        target = self.config.target_fps
        if not self.live or target is None or self._last_run_s is None:
            return False
        return now - self._last_run_s < 1.0 / target - _RATE_SLACK_S

    def _in_motion(self, now: float) -> bool:
        last = self._last_motion_s
        return last is not None and now - last <= self.config.hold_s

    # NOTE: a region-only detection still sets detection_ran=True, so the
    # tracker ages every unmatched track, including still objects outside
    # the crops, until the next full detection. Use 'full' where stationary
    # objects must keep their track ids, or until the tracker can age only
    # tracks inside the detected regions.
    def _regions(self, frame: Frame, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
        if self.config.detect_on == "full" or not boxes:
            return ()
        regions = plan_regions(
            boxes, frame.resolution_wh, self.input_wh, self.config.max_regions
        )
        return regions or ()


def detect_regions(
    detector: Detector, frame: Frame, regions: tuple[Box, ...]
) -> Detections:
    """Detect on crops of `frame` and return the boxes in frame pixels.

    Each crop is letterboxed by the detector like a frame of its own, the
    boxes are shifted back by the crop's origin, and duplicates where crops
    meet are merged with the detector's NMS threshold.
    """
    parts = []
    for left, top, right, bottom in regions:
        crop = frame.image[top:bottom, left:right]
        found = detector.detect(crop)
        offset = np.array([left, top, left, top], dtype=np.float32)
        parts.append(Detections(found.xyxy + offset, found.confidence, found.class_id))
    if len(parts) == 1:
        return parts[0]
    merged = Detections(
        np.concatenate([part.xyxy for part in parts]),
        np.concatenate([part.confidence for part in parts]),
        np.concatenate([part.class_id for part in parts]),
    )
    keep = nms_per_class(
        merged.xyxy,
        merged.confidence,
        merged.class_id,
        iou_threshold=detector.iou,
        max_keep=detector.max_detections,
    )
    return Detections(merged.xyxy[keep], merged.confidence[keep], merged.class_id[keep])
