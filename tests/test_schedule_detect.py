"""Detection scheduler: rate cap, maximum interval, motion gating and crops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.detector import Detector
from edge.motion import MotionConfig
from edge.schedule_detect import DetectionScheduler, Reason, detect_regions
from edge.sources import open_source
from edge.types import Frame

START = datetime(2024, 5, 1, tzinfo=UTC)
STILL = np.full((240, 320, 3), 90, dtype=np.uint8)


def frame_at(pts_s: float, image: np.ndarray = STILL, index: int = 0) -> Frame:
    return Frame(image.copy(), index, pts_s, START + timedelta(seconds=pts_s))


def moving_image(step: int) -> np.ndarray:
    # Steps of 50 px with a 40 px block leave no pixel covered twice, so the
    # running-average background keeps no ghost of the block.
    image = STILL.copy()
    x = 20 + 50 * (step % 5)
    image[100:160, x : x + 40] = 250
    return image


def plan_all(
    scheduler: DetectionScheduler, times: list[float], moving: bool = False
) -> list[Reason]:
    reasons = []
    for step, pts in enumerate(times):
        image = moving_image(step) if moving else STILL
        reasons.append(scheduler.plan(frame_at(pts, image, step)).reason)
    return reasons


@pytest.mark.parametrize(
    ("config", "live", "fps", "runs"),
    [
        (MotionConfig(), False, 25.0, 25),
        (MotionConfig(target_fps=5), False, 25.0, 25),
        (MotionConfig(target_fps=5), True, 25.0, 5),
        (MotionConfig(target_fps=10), True, 10.0, 10),
        (MotionConfig(target_fps=10), True, 30.0, 10),
    ],
    ids=[
        "file-every-frame",
        "file-ignores-rate",
        "live-5-of-25",
        "live-10-of-10",
        "live-10-of-30",
    ],
)
def test_rate_cap(config: MotionConfig, live: bool, fps: float, runs: int) -> None:
    scheduler = DetectionScheduler(config, live=live, input_wh=(640, 640))
    times = [i / fps for i in range(int(fps))]
    reasons = plan_all(scheduler, times)
    assert sum(reason is not Reason.RATE for reason in reasons) == runs


def test_gated_still_scene_runs_on_interval_only() -> None:
    config = MotionConfig(gating=True, max_interval_s=2.0)
    scheduler = DetectionScheduler(config, live=False, input_wh=(640, 640))
    reasons = plan_all(scheduler, [i / 10 for i in range(61)])
    runs = [i for i, reason in enumerate(reasons) if reason is not Reason.STILL]
    assert runs == [0, 20, 40, 60]
    assert reasons[0] is Reason.FIRST
    assert reasons[20] is Reason.INTERVAL


def test_gated_motion_runs_and_holds() -> None:
    config = MotionConfig(gating=True, hold_s=0.3, persistence_frames=2)
    scheduler = DetectionScheduler(config, live=False, input_wh=(640, 640))
    plan_all(scheduler, [0.0])
    moving = plan_all(scheduler, [0.1, 0.2, 0.3, 0.4], moving=True)
    still = [scheduler.plan(frame_at(0.5 + i / 10)).reason for i in range(6)]

    assert moving == [Reason.STILL, Reason.MOTION, Reason.MOTION, Reason.MOTION]
    assert still[:3] == [Reason.MOTION] * 3
    assert still[3:] == [Reason.STILL] * 3


def test_plan_marks_detection_ran() -> None:
    scheduler = DetectionScheduler(
        MotionConfig(gating=True), live=False, input_wh=(640, 640)
    )
    first, second = frame_at(0.0), frame_at(0.1)
    scheduler.plan(first)
    scheduler.plan(second)
    assert first.detection_ran
    assert not second.detection_ran


def test_regions_mode_returns_crops() -> None:
    config = MotionConfig(gating=True, detect_on="regions", persistence_frames=1)
    scheduler = DetectionScheduler(config, live=False, input_wh=(128, 128))
    scheduler.plan(frame_at(0.0))
    plan = scheduler.plan(frame_at(0.1, moving_image(1), 1))
    assert plan.run
    assert len(plan.regions) == 1
    left, top, right, bottom = plan.regions[0]
    assert right - left >= 128
    assert bottom - top >= 128


def test_interval_detection_is_full_frame() -> None:
    config = MotionConfig(gating=True, detect_on="regions", max_interval_s=1.0)
    scheduler = DetectionScheduler(config, live=False, input_wh=(128, 128))
    plans = [scheduler.plan(frame_at(i / 10, moving_image(i), i)) for i in range(11)]
    assert plans[10].reason is Reason.INTERVAL
    assert plans[10].regions == ()


@pytest.mark.media
def test_detect_regions_maps_boxes_back(model_640: Path, vtest_avi: Path) -> None:
    detector = Detector(model_640, intra_op_threads=2, classes=["person"])
    with open_source(str(vtest_avi)) as source:
        frame = next(iter(source))
    full = detector.detect(frame.image)
    best = full.xyxy[0]
    cx, cy = int((best[0] + best[2]) / 2), int((best[1] + best[3]) / 2)
    left = min(max(0, cx - 160), 768 - 320)
    top = min(max(0, cy - 160), 576 - 320)
    crop = (left, top, left + 320, top + 320)

    found = detect_regions(detector, frame, (crop,))

    distance = np.abs(found.xyxy - best).max(axis=1)
    assert len(found) >= 1
    assert distance.min() < 12.0
    assert (found.xyxy[:, 0] >= left - 1).all()
    assert (found.xyxy[:, 2] <= left + 321).all()
