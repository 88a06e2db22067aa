"""Throughput features on real footage: motion gating keeps counts, shared detector.

The static scene is built from real frames: the first TUD-Campus frame held
for a minute with Gaussian sensor noise, then the clip's real motion. Gating
must skip most inference there and still count every crossing an ungated
run counts.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge.config import NodeConfig
from edge.detector import Detector
from edge.motion import MotionConfig
from edge.shared_detector import SharedDetector, SharedDetectorError
from edge.sources import open_source
from edge.types import Frame

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import (  # noqa: E402
    FrameListSource,
    ScheduledPipeline,
    still_then_real,
)

CAMPUS_FPS = 25.0
STILL_S = 60.0
NOISE_SIGMA = 2.5
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def campus_config(folder: Path, model: Path, tmp_path: Path) -> NodeConfig:
    return NodeConfig.model_validate(
        {
            "site": "test",
            "node": "campus",
            "source": {"uri": str(folder), "fps": CAMPUS_FPS},
            "model": {"path": str(model), "intra_op_threads": 2},
            "detection": {"classes": ["person"]},
            "geometry": {"reference_resolution": [640, 480]},
            "lines": [{"name": "x320", "points": [[320, 0], [320, 480]]}],
            "outbox": {"path": str(tmp_path / "outbox.db")},
        }
    )


def campus_frames(folder: Path) -> list[Frame]:
    with open_source(str(folder), fps=CAMPUS_FPS, start_at=START) as source:
        return list(source)


def run(config: NodeConfig, motion: MotionConfig, frames: object) -> ScheduledPipeline:
    pipeline = ScheduledPipeline(config, motion)
    pipeline.run_source(FrameListSource(frames, fps=CAMPUS_FPS))  # type: ignore[arg-type]
    return pipeline


@pytest.mark.media
@pytest.mark.slow
def test_gating_static_scene_keeps_counts(
    tud_campus: Path, model_640: Path, tmp_path: Path
) -> None:
    config = campus_config(tud_campus, model_640, tmp_path)
    real = campus_frames(tud_campus)

    ungated = run(config, MotionConfig(gating=False), list(real))
    still = still_then_real(real, fps=CAMPUS_FPS, still_s=STILL_S, sigma=NOISE_SIGMA)
    gated = run(config, MotionConfig(gating=True), still)

    expected = {key: n for key, n in ungated.summary.line_totals.items() if n}
    counted = {key: n for key, n in gated.summary.line_totals.items() if n}
    total_frames = gated.summary.frames
    inference_share = gated.summary.detection_frames / total_frames
    assert expected, "the ungated run counted no crossing; check the model and clip"
    assert total_frames == int(STILL_S * CAMPUS_FPS) + len(real)
    assert inference_share <= 0.20
    assert counted == expected


@pytest.fixture(scope="module")
def detector(model_640: Path) -> Detector:
    return Detector(model_640, intra_op_threads=2, classes=["person"])


@pytest.mark.media
def test_shared_detector_matches_single(detector: Detector, tud_campus: Path) -> None:
    images = [frame.image for frame in campus_frames(tud_campus)[:6:2]]
    expected = [detector.detect(image) for image in images]
    results: dict[int, object] = {}

    with SharedDetector(detector, max_batch=3, gather_s=0.05) as shared:

        def work(slot: int) -> None:
            results[slot] = shared.detect(images[slot], timeout_s=60)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert shared.images == 3
    for slot, want in enumerate(expected):
        got = results[slot]
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.5)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.class_id, want.class_id)  # type: ignore[attr-defined]


@pytest.mark.media
def test_shared_detector_rejects_after_close(detector: Detector) -> None:
    shared = SharedDetector(detector)
    shared.close()
    with pytest.raises(SharedDetectorError, match="closed; create a new one"):
        shared.detect(np.zeros((48, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1, got 0"),
        ({"gather_s": -1.0}, "gather_s must be 0 or more, got -1.0"),
    ],
    ids=["zero-batch", "negative-gather"],
)
@pytest.mark.media
def test_shared_detector_settings(
    detector: Detector, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(SharedDetectorError, match=message):
        SharedDetector(detector, **kwargs)  # type: ignore[arg-type]
