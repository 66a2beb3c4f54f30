"""Real int8 kernels for a calibrated subnet on the CPU (torch's fbgemm/oneDNN ops).

Each static 8-bit :class:`~nas.quant.QuantizedLayer` becomes a module that quantizes its
input to the calibrated grid, runs torch's integer kernel on the layer's int8 weight (the
same integers as the fake quantization) and returns its output, requantized to the
calibrated output grid, in float. This is what a latency measured "with int8 kernels"
times, and what the fake quantization must agree with. Layers the forward pass never
calls as modules (their weights read by functional code) keep their rounded weights in
float.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from nas.quant._layers import QuantizedLayer


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch 2.13 deprecates quantized tensors with a warning on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated", category=UserWarning)
        yield


def _qweight(layer: QuantizedLayer) -> Tensor:
    zero = torch.zeros(layer.weight_scale.shape, dtype=torch.long)
    return torch._make_per_channel_quantized_tensor(layer.integers, layer.weight_scale.double(),
                                                    zero, 0)


class Int8Linear(nn.Module):
    """A static 8-bit linear :class:`QuantizedLayer` on torch's integer kernel."""

    def __init__(self, layer: QuantizedLayer) -> None:
        super().__init__()
        self.inp, self.out = layer.grid("input"), layer.grid("output")
        self.out_features = layer.shape[0]
        self.register_buffer("weight", layer.weight)  # read by some functional code
        bias = layer.bias.float() if layer.bias is not None else None
        with _quiet():
            self._packed = torch.ops.quantized.linear_prepack(_qweight(layer), bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        with _quiet():
            xq = torch.quantize_per_tensor(x.reshape(-1, shape[-1]).contiguous(),
                                           self.inp.scale, self.inp.zero_point, torch.quint8)
            y = torch.ops.quantized.linear(xq, self._packed, self.out.scale, self.out.zero_point)
            return y.dequantize().reshape(*shape[:-1], self.out_features)


class Int8Conv2d(nn.Module):
    """A static 8-bit ``Conv2d`` :class:`QuantizedLayer` (grouped and depthwise too) on
    torch's integer kernel."""

    def __init__(self, layer: QuantizedLayer) -> None:
        super().__init__()
        self.inp, self.out = layer.grid("input"), layer.grid("output")
        self.register_buffer("weight", layer.weight)
        bias = layer.bias.float() if layer.bias is not None else None
        conv = layer.conv
        with _quiet():
            self._packed = torch.ops.quantized.conv2d_prepack(
                _qweight(layer), bias, list(conv["stride"]), list(conv["padding"]),
                list(conv["dilation"]), conv["groups"],
            )

    def forward(self, x: Tensor) -> Tensor:
        with _quiet():
            xq = torch.quantize_per_tensor(x.float(), self.inp.scale, self.inp.zero_point,
                                           torch.quint8)
            y = torch.ops.quantized.conv2d(xq, self._packed, self.out.scale, self.out.zero_point)
            return y.dequantize()


_KERNELS = {"Linear": Int8Linear, "Conv2d": Int8Conv2d}


def int8_kernels(model: nn.Module) -> nn.Module:
    """``model`` with every static 8-bit linear and 2-d convolution
    :class:`QuantizedLayer` on torch's integer kernels (in place; returns ``model``).
    Others (weight-only layers, ``Conv1d``) stay fake-quantized.

    Raises:
        ValueError: a layer of another width (torch's CPU kernels are int8 only).
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QuantizedLayer)]
    other = {name: m.bits for name, m in layers if m.bits != 8}
    if other:
        raise ValueError(f"int8 kernels run 8-bit layers only, got {other}")
    modules = dict(model.named_modules())
    for name, layer in layers:
        if layer.static and layer.kind in _KERNELS:
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent] if parent else model, attr, _KERNELS[layer.kind](layer))
    return model
