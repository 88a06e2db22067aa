"""Static QDQ int8 quantisation of a float detector with ONNX Runtime.

Static quantisation fixes every activation's scale from calibration frames, so
the int8 model runs QLinear kernels end to end. Dynamic quantisation instead
inserts a DynamicQuantizeLinear before every convolution and measures ranges
per frame, which on CPUs made the YOLOv8n int8 file slower than fp32.

The YOLO output tensor concatenates box coordinates in input pixels (0..640)
with class scores (0..1). One int8 scale over both rounds every score to 0 or
2.5, so the decode tail of the head stays in float: see `head_nodes`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from models.frames import SourceFrame, Tensor, letterbox, read_frames

logger = logging.getLogger(__name__)


class QuantizeError(RuntimeError):
    """A model cannot be quantised as requested."""


class Calibration(StrEnum):
    """Calibration method that turns observed activations into int8 ranges.

    MinMax keeps every observed value in range (robust on few frames); Entropy
    and Percentile clip outliers, which sharpens resolution but needs more
    frames to be stable, and both take longer to collect.
    """

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    def to_onnxruntime(self) -> CalibrationMethod:
        """Return the matching ONNX Runtime calibration method."""
        return {
            Calibration.MINMAX: CalibrationMethod.MinMax,
            Calibration.ENTROPY: CalibrationMethod.Entropy,
            Calibration.PERCENTILE: CalibrationMethod.Percentile,
        }[self]


@dataclass(frozen=True, slots=True)
class QuantizeReport:
    """Result of `quantize_model`.

    Attributes:
        output: path of the written int8 model.
        calibration_frames: number of frames the ranges came from.
        excluded_nodes: names of the nodes kept in float.
    """

    output: Path
    calibration_frames: int
    excluded_nodes: tuple[str, ...]


class FrameReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds letterboxed frames to ONNX Runtime's calibrator, one per call."""

    def __init__(self, input_name: str, tensors: Sequence[Tensor]) -> None:
        self._input_name = input_name
        self._tensors = list(tensors)
        self._position = 0

    def get_next(self) -> dict[str, Tensor] | None:
        """Return the next input feed, or None when all frames were given."""
        if self._position >= len(self._tensors):
            return None
        tensor = self._tensors[self._position]
        self._position += 1
        return {self._input_name: tensor}

    def rewind(self) -> None:
        """Start again from the first frame."""
        self._position = 0


def input_size(model: onnx.ModelProto) -> tuple[str, int]:
    """Return the name and square side of the model's image input.

    Raises:
        QuantizeError: the input is not a fixed 1x3xSxS tensor.
    """
    graph_input = model.graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] == 0 or dims[2] != dims[3]:
        raise QuantizeError(
            f"input {graph_input.name!r} has shape {dims}; expected a fixed "
            "1x3xSxS image input (export with a fixed imgsz, not dynamic=True)"
        )
    return graph_input.name, dims[2]


def _is_decode_conv(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> bool:
    """Tell whether `node` is a fixed-weight decode Conv such as YOLOv8's DFL.

    The DFL convolution takes the expectation of a Softmax over 16 bins; it is
    part of the box decode, not a learned feature layer.
    """
    source = producers.get(node.input[0])
    return source is not None and source.op_type == "Softmax"


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Find the nodes of the detection head's decode tail.

    Walks back from the graph outputs and stops at convolutions, except a
    Conv fed by a Softmax (YOLOv8's DFL), which belongs to the decode. What
    it collects is the reshape, concatenation, Sigmoid, Softmax and box
    arithmetic (Sub, Add, Div, Mul) after the last learned convolutions,
    whatever names the exporter gave them.

    Returns:
        Node names in graph order; unnamed nodes are given names first.
    """
    for number, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{number}"
    producers = {out: node for node in model.graph.node for out in node.output}
    found: set[str] = set()
    pending = [out.name for out in model.graph.output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in found:
            continue
        if node.op_type == "Conv" and not _is_decode_conv(node, producers):
            continue
        found.add(node.name)
        pending.extend(node.input)
    return [node.name for node in model.graph.node if node.name in found]


def calibration_tensors(frames: Sequence[SourceFrame], size: int) -> list[Tensor]:
    """Letterbox frames to the model input exactly as the detector does."""
    return [letterbox(frame.image, size)[0] for frame in frames]


def _check_float(model: onnx.ModelProto) -> None:
    quantised = {"ConvInteger", "MatMulInteger", "QuantizeLinear", "QLinearConv"}
    found = sorted({n.op_type for n in model.graph.node} & quantised)
    if found:
        hint = (
            "run `sitlab-models dequantize` first"
            if "ConvInteger" in found or "MatMulInteger" in found
            else "start from the float model"
        )
        raise QuantizeError(
            f"model is already quantised (contains {', '.join(found)}); {hint}"
        )


def quantize_model(
    source: Path,
    output: Path,
    frame_sources: Sequence[Path],
    *,
    frames: int = 64,
    calibration: Calibration = Calibration.MINMAX,
    per_channel: bool = True,
    exclude: Sequence[str] = (),
) -> QuantizeReport:
    """Quantise a float ONNX detector to static QDQ int8.

    Args:
        source: float ONNX model with a fixed square image input.
        output: where to write the int8 model; written atomically.
        frame_sources: image folders, images or videos to calibrate on.
        frames: number of calibration frames spread over the sources. More
            frames give ranges closer to what the node will see; 32-128 is
            usually enough for MinMax, Entropy wants the upper end.
        calibration: how ranges are derived from observed activations.
        per_channel: one weight scale per output channel; turning it off
            loses accuracy on depthwise-like layers for no speed gain on CPU.
        exclude: further node names to keep in float, on top of the head.

    Raises:
        QuantizeError: the model is already quantised or has no fixed input.
        FrameSourceError: a calibration source is missing or unreadable.
    """
    model = onnx.load(str(source))
    _check_float(model)
    input_name, size = input_size(model)
    excluded = [*head_nodes(model), *exclude]
    logger.info("keeping %d head nodes in float: %s", len(excluded), excluded)
    tensors = calibration_tensors(read_frames(frame_sources, frames), size)

    with tempfile.TemporaryDirectory(prefix="sitlab-quant-") as workdir:
        named = Path(workdir) / "named.onnx"
        prepared = Path(workdir) / "prepared.onnx"
        onnx.save(model, str(named))
        # Shape inference first, as ONNX Runtime's quantiser recommends: it
        # folds constants and gives every tensor a shape for the calibrator.
        quant_pre_process(str(named), str(prepared), skip_symbolic_shape=True)
        _keep_names(prepared, excluded)
        partial = output.with_name(output.name + ".partial")
        output.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared),
            str(partial),
            FrameReader(input_name, tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=calibration.to_onnxruntime(),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        _copy_metadata(model, partial)
        partial.replace(output)
    logger.info("wrote static int8 model %s from %d frames", output, len(tensors))
    return QuantizeReport(output, len(tensors), tuple(excluded))


def _keep_names(prepared: Path, excluded: Sequence[str]) -> None:
    """Fail loudly if pre-processing renamed or removed head nodes."""
    names = {node.name for node in onnx.load(str(prepared)).graph.node}
    missing = [name for name in excluded if name not in names]
    if missing:
        raise QuantizeError(
            f"nodes {missing[:5]} to keep in float are not in the model after "
            "shape inference; pass names that exist (see `sitlab-models info`)"
        )


def _copy_metadata(model: onnx.ModelProto, path: Path) -> None:
    """Carry class names and export settings over, which the quantiser drops."""
    quantised = onnx.load(str(path))
    present = {prop.key for prop in quantised.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in present:
            quantised.metadata_props.add(key=prop.key, value=prop.value)
    quantised.metadata_props.add(key="quantization", value="static-qdq-int8")
    onnx.save(quantised, str(path))


def score_error(float_model: Path, int8_model: Path, tensor: Tensor) -> float:
    """Return the largest absolute class-score difference on one input.

    A quick sanity figure: a broken head shows errors near 1.0.
    """
    outputs = []
    for path in (float_model, int8_model):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs.append(np.asarray(session.run(None, {name: tensor})[0]))
    return float(np.abs(outputs[0][:, 4:] - outputs[1][:, 4:]).max())
