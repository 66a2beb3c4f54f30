"""The ONNX graph of a quantized subnet: int8 QDQ, and MatMulNBits for 4-bit linears.

The TorchScript exporter writes each :class:`~nas.quant.QuantizedLayer`'s weight as a
float initializer followed by ``QuantizeLinear``/``DequantizeLinear`` (the layer's
per-channel fake quantization) and its activations as Q/DQ pairs. A runtime folds the
weight's ``QuantizeLinear`` at load time, but the file would still hold float weights:
:func:`fold_weight_quantizers` stores the ``int8`` integers themselves, so the graph is
what ONNX Runtime's QDQ format expects (``DequantizeLinear`` of an int8 initializer,
per axis) and the file is a quarter of the float one.

A 4-bit linear layer exports as ONNX Runtime's ``com.microsoft::MatMulNBits`` (weight-only
4-bit, the packed nibbles as they are stored): :func:`matmul_nbits` is what the layer's
forward pass calls while it is exported. The layer's per-channel scale is every block's
scale of its row, and the signed nibbles offset by 8 are MatMulNBits' unsigned ones with
its default zero point 8, so the graph computes exactly what the fake quantization does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

NBITS_DOMAIN = "com.microsoft"
NBITS_BLOCK = 32
"""Block length along K (a power of two >= 16); our scale is per row, so any length is
exact: 32 pads K least."""
NBITS_ACCURACY_LEVEL = 0
"""fp32 arithmetic on the dequantized weights (exact); level 4 quantizes the input to
int8 per block as well, faster but no longer what the search scored."""


class _MatMulNBits(torch.autograd.Function):
    """``x @ weight.T`` in torch; ``MatMulNBits`` in an exported graph."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, packed: Tensor, scales: Tensor,
                k: int, n: int) -> Tensor:
        return F.linear(x, weight)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, packed: Any, scales: Any, k: int, n: int) -> Any:
        return g.op(f"{NBITS_DOMAIN}::MatMulNBits", x, packed, scales, K_i=k, N_i=n, bits_i=4,
                    block_size_i=NBITS_BLOCK, accuracy_level_i=NBITS_ACCURACY_LEVEL)


def matmul_nbits(x: Tensor, layer: Any) -> Tensor:
    """A 4-bit linear :class:`~nas.quant.QuantizedLayer`'s product (no bias) through
    :class:`_MatMulNBits`: its integers packed in blocks of :data:`NBITS_BLOCK`.

    The weights are read through numpy, so the tracer records them as constants
    rather than the unpacking ops (ONNX has no bitwise ops on bytes in opset 17)."""
    n, k = layer.shape
    packed = layer.weight_int4.detach().cpu().numpy()
    ints = np.stack([(packed & 0x0F).astype(np.int8) - 8, (packed >> 4).astype(np.int8) - 8],
                    axis=-1).reshape(n, -1)[:, :k]
    scale = layer.weight_scale.detach().cpu().numpy().astype(np.float32)
    blocks = -(-k // NBITS_BLOCK)
    nibbles = np.pad(ints, ((0, 0), (0, blocks * NBITS_BLOCK - k))).astype(np.int16) + 8
    blob = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8)
    weight = torch.from_numpy(ints.astype(np.float32) * scale[:, None])
    return _MatMulNBits.apply(
        x, weight, torch.from_numpy(blob.reshape(n, blocks, NBITS_BLOCK // 2)),
        torch.from_numpy(np.repeat(scale[:, None], blocks, axis=1)), k, n)


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
