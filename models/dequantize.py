"""Turn a dynamically quantised model back into a float model.

ONNX Runtime's dynamic quantiser rewrites each `Conv` as

    DynamicQuantizeLinear(x) -> ConvInteger(x_q, w_q, x_zp, w_zp)
        -> Cast(float) -> Mul(x_scale * w_scale) [-> Add(bias)]

This module rebuilds one float `Conv` per `ConvInteger` with the weight
w = (w_q - w_zp) * w_scale and the bias of the trailing `Add`, then drops the
nodes and initialisers nothing uses any more. The result carries the int8
rounding of the weights but computes activations in float, so it can be
quantised statically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

CONV_ATTRIBUTES = ("dilations", "group", "kernel_shape", "pads", "strides", "auto_pad")


class DequantizeError(ValueError):
    """The model's quantised layout is not one this module can undo."""


@dataclass(frozen=True, slots=True)
class _Rebuilt:
    conv: onnx.NodeProto
    weight: onnx.TensorProto
    bias: onnx.TensorProto | None


class _Graph:
    """Lookups over one graph: producers, consumers and constant tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {init.name: init for init in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def constant(self, name: str) -> npt.NDArray[np.float64] | None:
        """Return a constant tensor, looking through Reshape of a constant."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name]).astype(np.float64)
        node = self.producers.get(name)
        if node is not None and node.op_type == "Reshape":
            return self.constant(node.input[0])
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
        return None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """Return the single consumer of `name` if it has type `op_type`."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type:
            return users[0]
        return None


def _weight_scale(
    graph: _Graph, scale_mul: onnx.NodeProto, x_scale: str
) -> npt.NDArray[np.float64]:
    others = [name for name in scale_mul.input if name != x_scale]
    scale = graph.constant(others[0]) if len(others) == 1 else None
    if scale is None:
        raise DequantizeError(
            f"scale Mul {scale_mul.name!r} does not multiply the activation scale "
            "by a constant weight scale"
        )
    return scale


def _rebuild(graph: _Graph, node: onnx.NodeProto) -> tuple[_Rebuilt, str]:
    """Build the float Conv that replaces one ConvInteger."""
    quantize = graph.producers.get(node.input[0])
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear":
        raise DequantizeError(
            f"ConvInteger {node.name!r} is not fed by DynamicQuantizeLinear; "
            "only ONNX Runtime's dynamic quantisation layout is supported"
        )
    w_q = graph.constant(node.input[1])
    has_zero_point = len(node.input) > 3 and bool(node.input[3])
    w_zp: npt.NDArray[np.float64] | None = (
        graph.constant(node.input[3]) if has_zero_point else np.zeros(())
    )
    cast = graph.only_consumer(node.output[0], "Cast")
    rescale = graph.only_consumer(cast.output[0], "Mul") if cast else None
    if w_q is None or cast is None or rescale is None:
        raise DequantizeError(
            f"ConvInteger {node.name!r} is not followed by Cast and Mul with a "
            "constant weight; cannot recover its float weight"
        )
    scale_name = next(name for name in rescale.input if name != cast.output[0])
    scale_mul = graph.producers[scale_name]
    w_scale = _weight_scale(graph, scale_mul, quantize.output[1])
    if w_zp is None:
        raise DequantizeError(
            f"ConvInteger {node.name!r} has a non-constant zero point"
        )
    # Per-channel parameters are vectors over the output channels (axis 0).
    shape = [-1] + [1] * (w_q.ndim - 1)
    w_zp = w_zp.reshape(shape) if w_zp.ndim else w_zp
    w_scale = w_scale.reshape(shape) if w_scale.ndim else w_scale
    weight = ((w_q - w_zp) * w_scale).astype(np.float32)

    output, bias = rescale.output[0], None
    add = graph.only_consumer(output, "Add")
    if add is not None:
        other = next(name for name in add.input if name != output)
        values = graph.constant(other)
        if values is not None and values.size == weight.shape[0]:
            bias = values.reshape(-1).astype(np.float32)
            output = add.output[0]

    base = node.name.removesuffix("_quant") or node.output[0]
    weight_tensor = numpy_helper.from_array(weight, f"{base}.weight")
    inputs = [quantize.input[0], weight_tensor.name]
    bias_tensor = None
    if bias is not None:
        bias_tensor = numpy_helper.from_array(bias, f"{base}.bias")
        inputs.append(bias_tensor.name)
    attributes = {
        a.name: helper.get_attribute_value(a)
        for a in node.attribute
        if a.name in CONV_ATTRIBUTES
    }
    conv = helper.make_node("Conv", inputs, [output], name=base, **attributes)
    return _Rebuilt(conv, weight_tensor, bias_tensor), output


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads, then unused initialisers."""
    outputs = {out.name for out in graph.output}
    while True:
        used = outputs | {name for node in graph.node for name in node.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def dequantize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a float copy of a dynamically quantised model.

    Raises:
        DequantizeError: the model has no ConvInteger, uses MatMulInteger, or
            a ConvInteger is not in ONNX Runtime's dynamic layout.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    kinds = {node.op_type for node in graph.node}
    if "MatMulInteger" in kinds:
        raise DequantizeError(
            "model contains MatMulInteger; only ConvInteger layers can be "
            "rebuilt, so start from the float export instead"
        )
    lookup = _Graph(graph)
    targets = [node for node in graph.node if node.op_type == "ConvInteger"]
    if not targets:
        raise DequantizeError(
            "model has no ConvInteger node; it is not dynamically quantised"
        )
    for node in targets:
        rebuilt, output = _rebuild(lookup, node)
        # The old chain stops producing `output`, so the pruning pass below
        # removes it once the new Conv is in place.
        producer = lookup.producers[output]
        producer.output[list(producer.output).index(output)] = output + "_unused"
        position = list(graph.node).index(producer)
        graph.node.insert(position + 1, rebuilt.conv)
        graph.initializer.append(rebuilt.weight)
        if rebuilt.bias is not None:
            graph.initializer.append(rebuilt.bias)
    _prune(graph)
    for prop in list(result.metadata_props):
        if prop.key == "onnx.infer":
            result.metadata_props.remove(prop)
    logger.info("rebuilt %d ConvInteger nodes as float Conv", len(targets))
    onnx.checker.check_model(result)
    return result


def dequantize_file(source: Path, output: Path) -> Path:
    """Dequantise the model at `source` and write it atomically to `output`."""
    model = dequantize_model(onnx.load(str(source)))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(output)
    return output
