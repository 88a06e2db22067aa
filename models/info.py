"""Describe an ONNX detector file: layout, precision, classes and digest."""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from models.pull import sha256_file


class ModelInfoError(ValueError):
    """The file is not a readable ONNX model."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Description of a model file, as `describe` returns it.

    Attributes:
        path: the file described.
        output_format: yolov8, yolov5, yolox, end2end or unknown.
        input_name: name of the image input.
        input_shape: input dimensions; 0 marks a dynamic dimension.
        output_shape: first output's dimensions.
        classes: number of classes.
        names: class names from the metadata, empty when there are none.
        quantization: fp32, dynamic-int8, static-qdq-int8 or qoperator-int8.
        opset: version of the default ONNX operator set.
        size_bytes: size on disk.
        sha256: lowercase hex digest of the file.
        metadata: every metadata key and value.
    """

    path: Path
    output_format: str
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    classes: int
    names: tuple[str, ...]
    quantization: str
    opset: int
    size_bytes: int
    sha256: str
    metadata: dict[str, str]


def quantization_kind(op_types: Counter[str]) -> str:
    """Name the quantisation scheme from the operator types of a graph."""
    if op_types["ConvInteger"] or op_types["MatMulInteger"]:
        return "dynamic-int8"
    if op_types["QuantizeLinear"] and op_types["DequantizeLinear"]:
        return "static-qdq-int8"
    if op_types["QLinearConv"] or op_types["QLinearMatMul"]:
        return "qoperator-int8"
    return "fp32"


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in value.type.tensor_type.shape.dim)


def _names(metadata: dict[str, str]) -> tuple[str, ...]:
    text = metadata.get("names")
    if not text:
        return ()
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ()
    if isinstance(parsed, dict):
        return tuple(str(parsed[k]) for k in sorted(parsed))
    if isinstance(parsed, list):
        return tuple(str(v) for v in parsed)
    return ()


def output_layout(
    output_shape: tuple[int, ...], outputs: int, metadata: dict[str, str]
) -> tuple[str, int]:
    """Guess the output format and class count from the first output.

    YOLOv8 emits (1, 4 + C, N) with N > 4 + C; YOLOv5 and YOLOX emit
    (1, N, 5 + C) with an objectness column; an end-to-end export (NMS in
    the graph) emits (1, K, 6) or several outputs.
    """
    if metadata.get("end2end") == "True" or outputs > 1:
        return "end2end", len(_names(metadata))
    if len(output_shape) == 3 and output_shape[2] == 6:
        return "end2end", len(_names(metadata))
    if len(output_shape) == 3 and 0 < output_shape[1] < output_shape[2]:
        return "yolov8", output_shape[1] - 4
    if len(output_shape) == 3 and output_shape[2] > 5:
        kind = (
            "yolox" if "yolox" in metadata.get("description", "").lower() else "yolov5"
        )
        return kind, output_shape[2] - 5
    return "unknown", len(_names(metadata))


def describe(path: Path) -> ModelInfo:
    """Read a model file and describe it.

    Raises:
        ModelInfoError: the file is missing or not an ONNX model.
    """
    if not path.is_file():
        raise ModelInfoError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others
        raise ModelInfoError(f"{path} is not a readable ONNX model: {error}") from error
    if not model.graph.input or not model.graph.output:
        raise ModelInfoError(f"{path} has no graph inputs or outputs")
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    output_shape = _dims(model.graph.output[0])
    fmt, classes = output_layout(output_shape, len(model.graph.output), metadata)
    opset = next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0
    )
    return ModelInfo(
        path=path,
        output_format=fmt,
        input_name=model.graph.input[0].name,
        input_shape=_dims(model.graph.input[0]),
        output_shape=output_shape,
        classes=classes,
        names=_names(metadata),
        quantization=quantization_kind(Counter(n.op_type for n in model.graph.node)),
        opset=opset,
        size_bytes=path.stat().st_size,
        sha256=sha256_file(path),
        metadata=metadata,
    )
