"""Recognition of a model's output layout.

Supported layouts, for one image (the batch axis is dropped):

- `ultralytics`: (4+C, N), rows cx, cy, w, h then C class scores, no
  objectness (YOLOv8, YOLO11, YOLOv5u exported by Ultralytics).
- `ultralytics_transposed`: the same as (N, 4+C).
- `yolov5`: (N, 5+C), cx, cy, w, h, objectness, C class scores; N is three
  anchors per grid cell (ultralytics/yolov5 exports).
- `yolox_decoded`: (N, 5+C) like YOLOv5 but one row per grid cell; boxes in
  input pixels (YOLOX exported with `--decode_in_inference`).
- `yolox_raw`: the same rows before decoding: cx, cy are offsets from the grid
  cell and w, h are logs, in units of the stride (YOLOX's default export).
- `end2end`: (K, 6) rows x1, y1, x2, y2, score, class with NMS done in the
  graph (YOLOv10, Ultralytics `end2end` exports).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.detector.errors import DetectorConfigError, UnsupportedFormatError

logger = logging.getLogger(__name__)

GRID_STRIDES = (8, 16, 32)
YOLOV5_ANCHORS_PER_CELL = 3

# An override that lets the detector tell raw YOLOX from decoded YOLOX.
YOLOX_AUTO = "yolox"


class OutputFormat(enum.StrEnum):
    """Layout of a detection model's output tensor."""

    ULTRALYTICS = "ultralytics"
    ULTRALYTICS_TRANSPOSED = "ultralytics_transposed"
    YOLOV5 = "yolov5"
    YOLOX_DECODED = "yolox_decoded"
    YOLOX_RAW = "yolox_raw"
    END2END = "end2end"


OVERRIDE_CHOICES = (*[f.value for f in OutputFormat], YOLOX_AUTO)


@dataclass(frozen=True, slots=True)
class OutputLayout:
    """A recognised output layout.

    Attributes:
        format: how rows and columns are laid out.
        class_count: number of class score columns, or None for `end2end`,
            whose class ids do not fix the count.
    """

    format: OutputFormat
    class_count: int | None


def parse_output_format(value: str | OutputFormat | None) -> str | None:
    """Validate an `output_format` override and return its string value.

    Raises:
        DetectorConfigError: when the value is not one of `OVERRIDE_CHOICES`.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in OVERRIDE_CHOICES:
        raise DetectorConfigError(
            f"output_format {value!r} is invalid; use one of {list(OVERRIDE_CHOICES)} "
            "or leave it unset to recognise the layout from the model"
        )
    return text


def anchor_free_rows(input_wh: tuple[int, int]) -> int:
    """Return the rows of a one-prediction-per-cell head at strides 8, 16, 32."""
    width, height = input_wh
    return sum(math.ceil(width / s) * math.ceil(height / s) for s in GRID_STRIDES)


def yolox_grid(
    input_wh: tuple[int, int],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Build the YOLOX grid cell origins and strides, row by row of the output.

    Rows go stride by stride (8, 16, 32), and within a stride row-major over
    the feature map, as YOLOX's head flattens them.

    Returns:
        (cells, strides): float32 arrays (N, 2) of cell x, y and (N,) of strides.
    """
    width, height = input_wh
    cells: list[npt.NDArray[np.float32]] = []
    strides: list[npt.NDArray[np.float32]] = []
    for stride in GRID_STRIDES:
        columns, rows = math.ceil(width / stride), math.ceil(height / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        cells.append(np.stack((xs, ys), axis=-1).reshape(-1, 2).astype(np.float32))
        strides.append(np.full(rows * columns, stride, dtype=np.float32))
    return np.concatenate(cells), np.concatenate(strides)


def recognise_format(
    output_shape: Sequence[int],
    *,
    input_wh: tuple[int, int],
    metadata: Mapping[str, str],
    names_count: int | None,
    override: str | None = None,
    sample: npt.NDArray[np.floating] | None = None,
) -> OutputLayout:
    """Recognise the output layout from its shape and the model metadata.

    Args:
        output_shape: shape of the first output for a batch of one.
        input_wh: model input width and height (fixes the grid row counts).
        metadata: the model's custom metadata map.
        names_count: number of class names in the metadata, if any.
        override: a value of `OVERRIDE_CHOICES` that skips recognition.
        sample: one output of the model (any input), used to tell raw YOLOX
            from decoded YOLOX by the range of its centre columns.

    Returns:
        The layout.

    Raises:
        UnsupportedFormatError: when the shape fits no layout, fits several
            and nothing breaks the tie, or does not fit the override.
    """
    rows, columns = _rows_columns(output_shape)
    if override is not None:
        return _apply_override(override, rows, columns, input_wh, metadata, sample)

    candidates = _candidates(rows, columns, input_wh, metadata, names_count)
    if not candidates and names_count is not None:
        logger.warning(
            "output shape %s does not fit the %d metadata class names; recognising "
            "it by shape alone",
            list(output_shape),
            names_count,
        )
        candidates = _candidates(rows, columns, input_wh, metadata, None)
    if len(candidates) > 1:
        candidates = _break_tie(candidates, metadata)
    if not candidates:
        raise UnsupportedFormatError(
            f"model output shape {list(output_shape)} (input {input_wh[0]}x"
            f"{input_wh[1]}) matches no supported layout; set output_format to one "
            f"of {list(OVERRIDE_CHOICES)} if the model is one of them"
        )
    if len(candidates) > 1:
        names = [c.format.value for c in candidates]
        raise UnsupportedFormatError(
            f"model output shape {list(output_shape)} is ambiguous between {names}; "
            "set output_format to the right one"
        )
    layout = candidates[0]
    if layout.format is OutputFormat.YOLOX_DECODED:
        layout = _yolox_variant(layout, input_wh, metadata, sample)
    return layout


def _rows_columns(output_shape: Sequence[int]) -> tuple[int, int]:
    if len(output_shape) != 3 or output_shape[0] != 1:
        raise UnsupportedFormatError(
            f"model output shape {list(output_shape)} is not (1, rows, columns); "
            "only single-tensor YOLO detection heads are supported"
        )
    return int(output_shape[1]), int(output_shape[2])


def _candidates(
    rows: int,
    columns: int,
    input_wh: tuple[int, int],
    metadata: Mapping[str, str],
    names_count: int | None,
) -> list[OutputLayout]:
    if columns == 6 and metadata.get("end2end", "").lower() == "true":
        return [OutputLayout(OutputFormat.END2END, None)]

    def fits(count: int) -> bool:
        return count > 0 and names_count in (None, count)

    grid = anchor_free_rows(input_wh)
    found: list[OutputLayout] = []
    if columns == grid and fits(rows - 4):
        found.append(OutputLayout(OutputFormat.ULTRALYTICS, rows - 4))
    if rows == grid and fits(columns - 4):
        found.append(OutputLayout(OutputFormat.ULTRALYTICS_TRANSPOSED, columns - 4))
    if rows == YOLOV5_ANCHORS_PER_CELL * grid and fits(columns - 5):
        found.append(OutputLayout(OutputFormat.YOLOV5, columns - 5))
    if rows == grid and fits(columns - 5):
        found.append(OutputLayout(OutputFormat.YOLOX_DECODED, columns - 5))
    if columns == 6 and rows not in (grid, YOLOV5_ANCHORS_PER_CELL * grid):
        found.append(OutputLayout(OutputFormat.END2END, None))
    if found or names_count is None:
        return found

    # Heads with other strides (P6 models) miss the grid counts; fall back to
    # the class count from the metadata names.
    if rows == names_count + 4 and columns > rows:
        found.append(OutputLayout(OutputFormat.ULTRALYTICS, names_count))
    if columns == names_count + 4 and rows > columns:
        found.append(OutputLayout(OutputFormat.ULTRALYTICS_TRANSPOSED, names_count))
    return found


def _break_tie(
    candidates: list[OutputLayout], metadata: Mapping[str, str]
) -> list[OutputLayout]:
    if metadata.get("author", "").startswith("Ultralytics"):
        ultralytics = {
            OutputFormat.ULTRALYTICS,
            OutputFormat.ULTRALYTICS_TRANSPOSED,
            OutputFormat.END2END,
        }
        preferred = [c for c in candidates if c.format in ultralytics]
        if preferred:
            candidates = preferred
    if len(candidates) > 1:
        # Without names in the metadata, (N, 85) is 81 classes of a transposed
        # Ultralytics head or 80 of YOLOX; COCO's 80 is by far the usual case.
        coco = [c for c in candidates if c.class_count == 80]
        if len(coco) == 1:
            logger.info("output layout ambiguous; assuming COCO-80 %s", coco[0].format)
            return coco
    return candidates


def _apply_override(  # noqa: PLR0917 - private helper of recognise_format
    override: str,
    rows: int,
    columns: int,
    input_wh: tuple[int, int],
    metadata: Mapping[str, str],
    sample: npt.NDArray[np.floating] | None,
) -> OutputLayout:
    if override == "end2end":
        if columns != 6:
            raise UnsupportedFormatError(
                f"model output shape [1, {rows}, {columns}] does not fit output_format "
                "'end2end', which needs 6 columns (x1, y1, x2, y2, score, class)"
            )
        return OutputLayout(OutputFormat.END2END, None)

    score_columns = {"ultralytics": rows - 4, "ultralytics_transposed": columns - 4}
    count = score_columns.get(override, columns - 5)
    if count < 1:
        raise UnsupportedFormatError(
            f"model output shape [1, {rows}, {columns}] leaves no class score "
            f"columns under output_format {override!r}; check the override against "
            "the model's export"
        )
    if override in score_columns:
        return OutputLayout(OutputFormat(override), count)
    if override == "yolov5":
        return OutputLayout(OutputFormat.YOLOV5, count)

    if override == YOLOX_AUTO:
        auto = OutputLayout(OutputFormat.YOLOX_DECODED, count)
        layout = _yolox_variant(auto, input_wh, metadata, sample)
    else:
        layout = OutputLayout(OutputFormat(override), count)
    if layout.format is OutputFormat.YOLOX_RAW and rows != anchor_free_rows(input_wh):
        raise UnsupportedFormatError(
            f"raw YOLOX output has {rows} rows but input {input_wh[0]}x{input_wh[1]} "
            f"at strides {GRID_STRIDES} gives {anchor_free_rows(input_wh)}; set "
            "input_size to the export size or use output_format 'yolox_decoded'"
        )
    return layout


def _yolox_variant(
    layout: OutputLayout,
    input_wh: tuple[int, int],
    metadata: Mapping[str, str],
    sample: npt.NDArray[np.floating] | None,
) -> OutputLayout:
    flag = metadata.get("decode_in_inference", "").lower()
    if flag in ("true", "false"):
        decoded = flag == "true"
    elif sample is not None:
        # Decoded centres span the input (up to its width), while raw centres
        # are cell offsets of a few units at most.
        # NOTE: checked on synthetic outputs only, not on a real YOLOX export.
        centres = np.abs(np.asarray(sample, dtype=np.float32)[..., :2])
        decoded = bool(np.nanmax(centres, initial=0.0) >= min(input_wh) / 4)
    else:
        decoded = True
    fmt = OutputFormat.YOLOX_DECODED if decoded else OutputFormat.YOLOX_RAW
    logger.info("YOLOX output recognised as %s", fmt)
    return OutputLayout(fmt, layout.class_count)
