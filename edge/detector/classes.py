"""Class names of a detection model.

Ultralytics writes the names into the ONNX custom metadata under `names` as
the repr of a Python dict (`{0: 'person', 1: 'bicycle', ...}`). It is parsed
with `ast.literal_eval`, which accepts only literals, because metadata comes
with a downloaded file and must never execute code.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "stop sign",
    "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


def parse_metadata_names(text: str) -> list[str] | None:
    """Parse the `names` metadata value into a list indexed by class id.

    Accepts a dict of int to str (Ultralytics) or a list of str. Returns None
    and logs a warning when the value is not such a literal or its keys are
    not exactly 0..N-1, so the caller falls back to default names.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        logger.warning("ignoring model metadata 'names': not a Python literal")
        return None

    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, Mapping):
        keys = sorted(value)
        valid = all(isinstance(k, int) for k in keys) and keys == list(range(len(keys)))
        if valid and all(isinstance(v, str) for v in value.values()):
            return [str(value[k]) for k in keys]
    logger.warning(
        "ignoring model metadata 'names': expected a dict of class ids 0..N-1 to "
        "names or a list of names, got %.80s",
        text,
    )
    return None


def default_names(class_count: int) -> list[str]:
    """Return COCO-80 names for 80 classes, else `class_<i>` for each id."""
    if class_count == len(COCO80_NAMES):
        return list(COCO80_NAMES)
    return [f"class_{i}" for i in range(class_count)]


def resolve_names(metadata_text: str | None, class_count: int | None) -> list[str]:
    """Choose the class names of a model.

    Args:
        metadata_text: the `names` metadata value, or None when absent.
        class_count: number of classes the output layout implies, or None when
            the layout does not fix it (end-to-end outputs).

    Returns:
        Metadata names when they parse and match `class_count`, otherwise
        `default_names(class_count)`; an empty list when neither is known.
    """
    parsed = parse_metadata_names(metadata_text) if metadata_text else None
    if parsed is not None and (class_count is None or len(parsed) == class_count):
        return parsed
    if parsed is not None:
        logger.warning(
            "model metadata lists %d class names but the output has %d classes; "
            "using default names",
            len(parsed),
            class_count,
        )
    return default_names(class_count) if class_count is not None else []
