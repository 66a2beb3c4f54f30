"""The int8 QDQ ONNX graph of a quantized subnet.

The TorchScript exporter writes each :class:`~nas.quant.QuantizedLayer`'s weight as a
float initializer followed by ``QuantizeLinear``/``DequantizeLinear`` (the layer's
per-channel fake quantization) and its activations as Q/DQ pairs. A runtime folds the
weight's ``QuantizeLinear`` at load time, but the file would still hold float weights:
:func:`fold_weight_quantizers` stores the ``int8`` integers themselves, so the graph is
what ONNX Runtime's QDQ format expects (``DequantizeLinear`` of an int8 initializer,
per axis) and the file is a quarter of the float one.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fold_weight_quantizers(model: Any) -> int:
    """Replace every ``QuantizeLinear`` of a float initializer by the int8 initializer it
    computes (in place on the ``onnx.ModelProto``); returns how many were folded."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded, dropped = 0, []
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[0]])
        scale = _value(node.input[1], initializers, constants)
        zero = _value(node.input[2], initializers, constants) if len(node.input) > 2 else None
        if zero is None or zero.dtype != np.int8:
            continue  # an activation-style (uint8) quantizer: not a weight
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        shape[axis] = -1
        q = np.round(weight / scale.reshape(shape)) + zero.astype(np.int32).reshape(shape)
        integers = np.clip(q, -128, 127).astype(np.int8)
        stored = numpy_helper.from_array(integers, name=node.output[0])
        graph.initializer.append(stored)
        graph.node.remove(node)
        if consumers.get(node.input[0]) == 1:
            dropped.append(node.input[0])
        folded += 1
    for name in dropped:
        graph.initializer.remove(initializers[name])
    return folded


def _value(name: str, initializers: dict[str, Any], constants: dict[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    if name in constants:
        for attribute in constants[name].attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
    return None
