"""Export Ultralytics weights to ONNX with the optional `ultralytics` extra."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install sitlab-edge[ultralytics]"


class ExportError(RuntimeError):
    """The export cannot run or failed."""


def check_export_args(weights: Path, imgsz: int, opset: int) -> None:
    """Validate export arguments before loading the heavy exporter.

    Raises:
        ExportError: a value is outside what the detector accepts.
    """
    if imgsz < 32 or imgsz % 32:
        raise ExportError(
            f"imgsz {imgsz} must be a positive multiple of 32 (the largest "
            "YOLO stride), for example 320 or 640"
        )
    if not 11 <= opset <= 21:
        raise ExportError(f"opset {opset} must be between 11 and 21")
    if weights.suffix != ".pt":
        raise ExportError(f"weights {weights} must be an Ultralytics .pt file")
    if not weights.is_file():
        raise ExportError(
            f"weights {weights} not found; get them with "
            "`sitlab-models pull yolov8n-pt`"
        )


def export_onnx(
    weights: Path, output: Path, *, imgsz: int = 640, opset: int = 17
) -> Path:
    """Export a .pt detector to ONNX at a fixed square input size.

    The export has no NMS in the graph (`nms=False`) and a fixed batch of 1,
    which is what the edge detector decodes and what static quantisation
    needs.

    Raises:
        ExportError: the `ultralytics` extra is missing, an argument is
            invalid, or the exporter failed.
    """
    check_export_args(weights, imgsz, opset)
    try:
        from ultralytics import YOLO  # noqa: PLC0415
    except ImportError as error:
        raise ExportError(
            f"exporting needs the Ultralytics package; run `{INSTALL_HINT}` ({error})"
        ) from error
    logger.info("exporting %s at %dx%d, opset %d", weights, imgsz, imgsz, opset)
    try:
        produced = YOLO(str(weights)).export(
            format="onnx",
            imgsz=imgsz,
            opset=opset,
            dynamic=False,
            simplify=True,
            nms=False,
        )
    except Exception as error:  # the exporter raises many unrelated types
        raise ExportError(f"Ultralytics export of {weights} failed: {error}") from error
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(produced), output)
    return output
