"""Letterbox geometry, its inverse, and the pixels written to the tensor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.detector import InvalidImageError, LetterboxBuffer, plan_letterbox
from edge.detector.letterbox import PAD_VALUE

INVERSE_CASES = [
    pytest.param(
        (1280, 720),
        (640, 640),
        (100, 140, 300, 340),
        (200, 0, 600, 400),
        id="landscape-inside",
    ),
    pytest.param(
        (1280, 720),
        (640, 640),
        (-3, 200, 50, 260),
        (0, 120, 100, 240),
        id="landscape-clipped-left",
    ),
    pytest.param(
        (720, 1280),
        (640, 640),
        (140, 100, 340, 300),
        (0, 200, 400, 600),
        id="portrait-inside",
    ),
    pytest.param(
        (1280, 720),
        (640, 640),
        (0, 0, 640, 100),
        (0, 0, 1280, 0),
        id="box-in-top-padding-collapses",
    ),
    pytest.param(
        (320, 240),
        (640, 640),
        (0, 80, 640, 560),
        (0, 0, 320, 240),
        id="upscaled-whole-frame",
    ),
]


@pytest.mark.parametrize(
    ("frame_wh", "input_wh", "model_box", "frame_box"), INVERSE_CASES
)
def test_inverse_maps_model_box(frame_wh, input_wh, model_box, frame_box):
    transform = plan_letterbox(frame_wh, input_wh)
    mapped = transform.to_frame(np.array([model_box], dtype=np.float32))
    np.testing.assert_allclose(mapped[0], frame_box, atol=1e-4)


PLAN_CASES = [
    pytest.param((1280, 720), (640, 640), (640, 360), (0, 140), id="landscape"),
    pytest.param((720, 1280), (640, 640), (360, 640), (140, 0), id="portrait"),
    pytest.param((768, 576), (320, 320), (320, 240), (0, 40), id="vtest-320"),
    pytest.param((640, 640), (640, 640), (640, 640), (0, 0), id="same-size"),
    pytest.param((1000, 3), (640, 640), (640, 2), (0, 319), id="odd-padding"),
    pytest.param((1280, 720), (640, 384), (640, 360), (0, 12), id="rectangular-input"),
]


@pytest.mark.parametrize(("frame_wh", "input_wh", "resized_wh", "pad_xy"), PLAN_CASES)
def test_plan_geometry(frame_wh, input_wh, resized_wh, pad_xy):
    transform = plan_letterbox(frame_wh, input_wh)
    assert transform.resized_wh == resized_wh
    assert transform.pad_xy == pad_xy


def test_plan_top_left_padding():
    transform = plan_letterbox((1280, 720), (640, 640), centered=False)
    assert transform.pad_xy == (0, 0)
    mapped = transform.to_frame(np.array([[100, 0, 300, 200]]))
    np.testing.assert_allclose(mapped[0], (200, 0, 600, 400))


sizes = st.integers(min_value=1, max_value=2000)
model_sizes = st.integers(min_value=1, max_value=40).map(lambda n: n * 32)


@settings(max_examples=200, deadline=None)
@given(
    frame_w=sizes,
    frame_h=sizes,
    input_w=model_sizes,
    input_h=model_sizes,
    fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=4, max_size=4),
    centered=st.booleans(),
)
def test_round_trip_is_identity(  # noqa: PLR0917 - hypothesis draws
    frame_w, frame_h, input_w, input_h, fractions, centered
):
    transform = plan_letterbox(
        (frame_w, frame_h), (input_w, input_h), centered=centered
    )
    x1, x2 = sorted((fractions[0] * frame_w, fractions[1] * frame_w))
    y1, y2 = sorted((fractions[2] * frame_h, fractions[3] * frame_h))
    box = np.array([[x1, y1, x2, y2]])

    model_box = transform.to_model(box)
    back = transform.to_frame(model_box)

    np.testing.assert_allclose(back, box, atol=0.5)
    assert transform.resized_wh[0] <= input_w
    assert transform.resized_wh[1] <= input_h


@settings(max_examples=40, deadline=None)
@given(
    frame_w=st.integers(min_value=40, max_value=900),
    frame_h=st.integers(min_value=40, max_value=900),
    fractions=st.lists(
        st.floats(min_value=0.1, max_value=0.9), min_size=4, max_size=4, unique=True
    ),
)
def test_pixels_land_where_transform_says(frame_w, frame_h, fractions):
    # A white rectangle drawn on a black frame must come back from the
    # tensor at the place the inverse transform reports.
    x1, x2 = sorted(round(f * frame_w) for f in fractions[:2])
    y1, y2 = sorted(round(f * frame_h) for f in fractions[2:])
    if x2 - x1 < 8 or y2 - y1 < 8:
        return
    frame = np.zeros((frame_h, frame_w, 3), dtype=np.uint8)
    frame[y1:y2, x1:x2] = 255
    buffer = LetterboxBuffer((320, 320))

    transform = buffer.fill(frame)

    bright = np.argwhere(buffer.tensor[0, 0] > 0.5)
    top, left = bright.min(axis=0)
    bottom, right = bright.max(axis=0) + 1
    found = transform.to_frame(np.array([[left, top, right, bottom]]))[0]
    tolerance = 1.5 / min(transform.scale_xy) + 1.0
    np.testing.assert_allclose(found, (x1, y1, x2, y2), atol=tolerance)


def test_buffer_pads_with_114_and_swaps_to_rgb():
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    buffer = LetterboxBuffer((640, 640))

    buffer.fill(frame)

    tensor = buffer.tensor
    assert tensor.shape == (1, 3, 640, 640)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, :, 0, 0], PAD_VALUE / 255.0, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 639, 639], PAD_VALUE / 255.0, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 320, 320], (0.0, 0.0, 1.0))


def test_buffer_repaints_padding_on_size_change():
    buffer = LetterboxBuffer((64, 64))
    buffer.fill(np.full((64, 64, 3), 255, dtype=np.uint8))

    buffer.fill(np.full((32, 64, 3), 255, dtype=np.uint8))

    np.testing.assert_allclose(buffer.tensor[0, :, 0, 0], PAD_VALUE / 255.0, rtol=1e-6)
    np.testing.assert_allclose(buffer.tensor[0, :, 32, 32], 1.0)


def test_buffer_bgr_unscaled_top_left():
    frame = np.zeros((32, 64, 3), dtype=np.uint8)
    frame[..., 2] = 200  # red in BGR
    buffer = LetterboxBuffer(
        (64, 64), channel_order="bgr", pixel_scale=1.0, centered=False
    )

    buffer.fill(frame)

    np.testing.assert_array_equal(buffer.tensor[0, :, 0, 0], (0.0, 0.0, 200.0))
    np.testing.assert_array_equal(buffer.tensor[0, :, 63, 0], (114.0, 114.0, 114.0))


CONVERTED_CASES = [
    pytest.param(np.full((20, 30), 77, dtype=np.uint8), id="grayscale-2d"),
    pytest.param(np.full((20, 30, 1), 77, dtype=np.uint8), id="grayscale-3d"),
    pytest.param(np.full((20, 30, 4), 77, dtype=np.uint8), id="bgra"),
]


@pytest.mark.parametrize("image", CONVERTED_CASES)
def test_buffer_converts_other_channel_counts(image):
    buffer = LetterboxBuffer((32, 32), pixel_scale=1.0)
    buffer.fill(image)
    np.testing.assert_array_equal(buffer.tensor[0, :, 16, 16], (77.0, 77.0, 77.0))


INVALID_IMAGE_CASES = [
    pytest.param(np.zeros((10, 10, 3), dtype=np.float32), "uint8", id="float-image"),
    pytest.param(np.zeros((0, 10, 3), dtype=np.uint8), "empty", id="empty-image"),
    pytest.param(
        np.zeros((10, 10, 2), dtype=np.uint8), r"\(H, W, 3\)", id="two-channels"
    ),
    pytest.param([[1, 2, 3]], "numpy array", id="list"),
]


@pytest.mark.parametrize(("image", "message"), INVALID_IMAGE_CASES)
def test_buffer_rejects_invalid_image(image, message):
    buffer = LetterboxBuffer((32, 32))
    with pytest.raises(InvalidImageError, match=message):
        buffer.fill(image)


def test_plan_rejects_zero_size():
    with pytest.raises(InvalidImageError, match=r"0x10 .* at least 1x1"):
        plan_letterbox((0, 10), (640, 640))
