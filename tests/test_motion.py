"""Motion detector: noise, lighting and persistence guards; region planning."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.motion import MotionConfig, MotionDetector, MotionError, plan_regions

WIDTH, HEIGHT = 640, 480


def textured_scene(seed: int = 1) -> np.ndarray:
    """A static scene with structure, so blur and noise behave as on video."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))


def noisy_frames(image: np.ndarray, sigma: float, count: int) -> list[np.ndarray]:
    """Frames of `image` with Gaussian sensor noise, from a bank of 8 fields."""
    rng = np.random.default_rng(3)
    base = image.astype(np.int16)
    bank = [
        rng.normal(0.0, sigma, image.shape).round().astype(np.int16) for _ in range(8)
    ]
    return [
        np.clip(base + bank[rng.integers(8)], 0, 255).astype(np.uint8)
        for _ in range(count)
    ]


def with_block(image: np.ndarray, x: int, y: int, size: int = 60) -> np.ndarray:
    frame = image.copy()
    frame[y : y + size, x : x + size] = (250, 250, 250)
    return frame


@pytest.mark.parametrize(
    "sigma", [1.0, 2.5, 4.0], ids=["sigma-1", "sigma-2.5", "sigma-4"]
)
def test_sensor_noise_is_not_motion(sigma: float) -> None:
    detector = MotionDetector(MotionConfig(gating=True))
    frames = noisy_frames(textured_scene(), sigma, 100)
    moving = [detector.update(frame).moving for frame in frames]
    assert not any(moving)


def test_moving_block_gives_box_around_it() -> None:
    scene = textured_scene()
    detector = MotionDetector(MotionConfig(gating=True, persistence_frames=2))
    detector.update(scene)
    results = [detector.update(with_block(scene, 100 + 8 * i, 200)) for i in range(4)]

    assert not results[0].moving
    assert results[1].moving
    left, top, right, bottom = results[3].boxes[0]
    assert left <= 124
    assert right >= 184
    assert top <= 200
    assert bottom >= 260


@pytest.mark.parametrize(
    ("persistence", "first_moving"),
    [(1, 0), (2, 1), (3, 2)],
    ids=["one-frame", "two-frames", "three-frames"],
)
def test_persistence_delays_motion(persistence: int, first_moving: int) -> None:
    scene = textured_scene()
    detector = MotionDetector(MotionConfig(gating=True, persistence_frames=persistence))
    detector.update(scene)
    moving = [
        detector.update(with_block(scene, 100 + 10 * i, 100)).moving for i in range(5)
    ]
    assert moving.index(True) == first_moving


def test_single_frame_flash_is_ignored() -> None:
    scene = textured_scene()
    detector = MotionDetector(MotionConfig(gating=True, persistence_frames=2))
    detector.update(scene)
    flashed = detector.update(with_block(scene, 300, 300))
    after = detector.update(scene)
    assert not flashed.moving
    assert not after.moving


def test_lighting_change_relearns_background() -> None:
    scene = textured_scene()
    brighter = np.clip(scene.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    detector = MotionDetector(MotionConfig(gating=True))
    detector.update(scene)
    switched = detector.update(brighter)
    settled = [detector.update(brighter).moving for _ in range(5)]

    assert switched.lighting_change
    assert not switched.moving
    assert switched.changed_fraction >= 0.8
    assert not any(settled)
    assert detector.lighting_changes == 1


def test_small_contours_are_ignored() -> None:
    scene = textured_scene()
    config = MotionConfig(gating=True, persistence_frames=1, min_area_fraction=0.01)
    detector = MotionDetector(config)
    detector.update(scene)
    result = detector.update(with_block(scene, 200, 200, size=20))
    assert not result.moving
    assert result.changed_fraction > 0


def test_frame_size_change_resets_background() -> None:
    detector = MotionDetector(MotionConfig(gating=True, persistence_frames=1))
    detector.update(textured_scene())
    result = detector.update(np.zeros((240, 320, 3), dtype=np.uint8))
    assert not result.moving
    assert result.changed_fraction == 0.0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((48, 64), dtype=np.uint8),
        np.zeros((48, 64, 4), dtype=np.uint8),
        np.zeros((48, 64, 3), dtype=np.float32),
    ],
    ids=["grey", "bgra", "float"],
)
def test_rejects_non_bgr_frames(image: np.ndarray) -> None:
    detector = MotionDetector(MotionConfig(gating=True))
    with pytest.raises(MotionError, match=r"BGR uint8 frame of shape \(H, W, 3\)"):
        detector.update(image)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target_fps": 0.1, "max_interval_s": 5}, "longer than max_interval_s 5"),
        ({"threshold": 0}, "greater than or equal to 1"),
        ({"lighting_fraction": 0}, "greater than 0"),
        ({"detect_on": "tiles"}, "'full' or 'regions'"),
        ({"gate": True}, "Extra inputs are not permitted"),
    ],
    ids=["rate-below-interval", "zero-threshold", "zero-lighting", "bad-mode", "typo"],
)
def test_config_rejects(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MotionConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (((10, 10, 50, 50),), ((0, 0, 320, 320),)),
        (((700, 500, 760, 570),), ((448, 256, 768, 576),)),
        (((10, 10, 50, 50), (60, 60, 90, 90)), ((0, 0, 320, 320),)),
        (
            ((10, 10, 50, 50), (700, 500, 760, 570)),
            ((0, 0, 320, 320), (448, 256, 768, 576)),
        ),
        (((0, 0, 700, 500),), None),
    ],
    ids=["corner-grown", "clamped-inside", "overlap-merged", "two-apart", "too-large"],
)
def test_plan_regions(
    boxes: tuple[tuple[int, int, int, int], ...],
    expected: tuple[tuple[int, int, int, int], ...] | None,
) -> None:
    assert plan_regions(boxes, (768, 576), (320, 320), max_regions=4) == expected


def test_plan_regions_too_many_falls_back() -> None:
    boxes = tuple((x, 0, x + 10, 10) for x in (0, 500, 1000, 1500))
    assert plan_regions(boxes, (1920, 1080), (320, 320), max_regions=3) is None
