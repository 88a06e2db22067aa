"""Validation of the detector's model-independent and per-model settings."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

import numpy as np

from edge.detector.decode import ScoreFilter
from edge.detector.errors import DetectorConfigError, UnsupportedFormatError

DEFAULT_MAX_STRIDE = 32


def check_unit_interval(name: str, value: float) -> float:
    """Return `value` as float if it lies in 0..1, else raise naming `name`."""
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise DetectorConfigError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def build_score_filter(
    names: Sequence[str],
    *,
    confidence: float,
    class_confidence: Mapping[str, float] | None,
    classes: Sequence[str] | None,
) -> ScoreFilter:
    """Turn class names and thresholds into per-class-id arrays.

    Args:
        names: class names indexed by class id.
        confidence: minimum score of every class without its own threshold.
        class_confidence: minimum score per class name, overriding
            `confidence`.
        classes: names of the classes to keep, or None for all.

    Raises:
        DetectorConfigError: on an unknown name, an empty class list or a
            threshold outside 0..1.
    """
    thresholds = np.full(len(names), check_unit_interval("confidence", confidence))
    for name, value in (class_confidence or {}).items():
        class_id = _class_id(names, name, "class_confidence")
        thresholds[class_id] = check_unit_interval(f"class_confidence[{name!r}]", value)

    class_ids = None
    if classes is not None:
        if isinstance(classes, str):
            classes = [classes]
        if not classes:
            raise DetectorConfigError(
                "classes is empty, so nothing would be detected; list class names "
                "or leave it unset to keep all classes"
            )
        ids = {_class_id(names, name, "classes") for name in classes}
        class_ids = np.array(sorted(ids), dtype=np.int64)
    return ScoreFilter(thresholds=thresholds.astype(np.float32), class_ids=class_ids)


def _class_id(names: Sequence[str], name: str, field: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        raise DetectorConfigError(
            f"{field}: unknown class name {name!r}; the model's class names are "
            f"{list(names)}"
        ) from None


def resolve_input_wh(
    input_shape: Sequence[int | str | None],
    requested: int | tuple[int, int] | None,
    metadata: Mapping[str, str],
) -> tuple[int, int]:
    """Choose the model input width and height.

    A fixed input size in the graph wins, and `requested` must then agree.
    A dynamic size takes `requested`, else Ultralytics' `imgsz` metadata
    (stored as [height, width]).

    Args:
        input_shape: ONNX Runtime's shape of the image input, NCHW; dynamic
            axes are strings or None.
        requested: `input_size` setting, an int for square or (width, height).
        metadata: the model's custom metadata map.

    Raises:
        UnsupportedFormatError: when the input is not NCHW with 3 channels.
        DetectorConfigError: when `requested` conflicts with a fixed size, is
            not a positive multiple of the model stride, or is needed but unset.
    """
    channels = input_shape[1] if len(input_shape) == 4 else None
    if len(input_shape) != 4 or (isinstance(channels, int) and channels != 3):
        raise UnsupportedFormatError(
            f"model input shape {list(input_shape)} is not (batch, 3, height, "
            "width); only NCHW image inputs with 3 channels are supported"
        )
    requested_wh = _parse_size(requested, metadata)
    height, width = input_shape[2], input_shape[3]
    if isinstance(width, int) and isinstance(height, int):
        if requested_wh is not None and requested_wh != (width, height):
            raise DetectorConfigError(
                f"input_size {requested_wh[0]}x{requested_wh[1]} conflicts with the "
                f"model's fixed input {width}x{height}; remove input_size or export "
                "the model at that size"
            )
        return width, height
    if requested_wh is not None:
        return requested_wh
    imgsz = _metadata_imgsz(metadata)
    if imgsz is not None:
        return imgsz
    raise DetectorConfigError(
        f"model input shape {list(input_shape)} has a dynamic size and no 'imgsz' "
        "metadata; set input_size, e.g. 640 or (640, 384)"
    )


def _parse_size(
    requested: int | tuple[int, int] | None, metadata: Mapping[str, str]
) -> tuple[int, int] | None:
    if requested is None:
        return None
    size = (requested, requested) if isinstance(requested, int) else tuple(requested)
    stride = _metadata_stride(metadata)
    valid = len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    if not valid or any(v % stride for v in size):
        raise DetectorConfigError(
            f"input_size {requested!r} is invalid; give an int or (width, height) of "
            f"positive multiples of the model stride {stride}"
        )
    return int(size[0]), int(size[1])


def _metadata_stride(metadata: Mapping[str, str]) -> int:
    text = metadata.get("stride", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_MAX_STRIDE


def _metadata_imgsz(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        value = ast.literal_eval(metadata.get("imgsz", ""))
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int) and value > 0:
        return value, value
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value)
    ):
        return int(value[1]), int(value[0])
    return None
