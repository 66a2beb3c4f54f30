"""Weight-only quantized subnets on the GPU: fp16 weights, or int8/int4 on the Triton GEMMs.

``cuda`` quantizes weights only (``quant_activations`` false): at decode shapes a linear
layer's time is the time to read its weight, so fewer weight bytes are what pays, and
activations stay in float. :func:`gpu_kernels` swaps each weight-only linear
:class:`~nas.quant.QuantizedLayer` for the module that runs it: 16 bits as an fp16
product, 8 and 4 bits on :mod:`nas.quant._triton_gemm`'s kernels (per-channel scales;
int4 as one group per row, which the kernel takes when K is a multiple of 32). The
integers and scales are the layer's own, so the kernels compute what the fake
quantization scored. Off CUDA, the GEMMs fall back to their torch reference (or run
Triton's interpreter under ``TRITON_INTERPRET=1``, as the tests do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.quant._layers import QuantizedLayer
from nas.quant._quantizers import HALF_BITS
from nas.quant._triton_gemm import (
    GROUP_MULTIPLE,
    int4_weight_only_linear,
    int8_weight_only_linear,
)

GPU_BITS: tuple[int, ...] = (16, 8, 4)
"""Weight widths the GPU kernels run (weight-only)."""


class HalfLinear(nn.Module):
    """A 16-bit :class:`QuantizedLayer`: an fp16 product, back in the input's dtype."""

    def __init__(self, layer: QuantizedLayer) -> None:
        super().__init__()
        self.register_buffer("weight", layer.weight_fp16.clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.half())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.half(), self.weight, self.bias).to(x.dtype)


class TritonLinear(nn.Module):
    """An 8- or 4-bit weight-only :class:`QuantizedLayer` on the Triton GEMMs."""

    def __init__(self, layer: QuantizedLayer) -> None:
        super().__init__()
        self.bits = layer.bits
        self.k = layer.shape[1]
        if layer.bits == 8:
            self.register_buffer("q", layer.weight_int8.clone())
            self.register_buffer("scales", layer.weight_scale.clone())
        else:
            self.register_buffer("q", layer.weight_int4.clone())
            self.register_buffer("scales", layer.weight_scale.reshape(-1, 1).clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == 8:
            return int8_weight_only_linear(x, self.q, self.scales, self.bias)
        return int4_weight_only_linear(x, self.q, self.scales, group=self.k, bias=self.bias)


def runs_on_gpu_kernels(layer: QuantizedLayer) -> bool:
    """Whether :func:`gpu_kernels` has a kernel for ``layer`` (others stay fake-quantized)."""
    if layer.kind != "Linear" or layer.static:
        return False
    if layer.bits == 4:
        return layer.shape[1] % GROUP_MULTIPLE == 0
    return layer.bits in (HALF_BITS, 8)


def gpu_kernels(model: nn.Module) -> nn.Module:
    """``model`` with its weight-only linear layers on the GPU modules (in place; returns
    ``model``); convolutions and 4-bit layers whose K is not a multiple of 32 stay
    fake-quantized.

    Raises:
        ValueError: a static (activation-quantized) layer, or a width outside
            :data:`GPU_BITS`.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QuantizedLayer)]
    other = sorted({m.bits for _, m in layers if m.bits not in GPU_BITS})
    if other:
        raise ValueError(f"the GPU kernels run {', '.join(map(str, GPU_BITS))}-bit weights, "
                         f"not {', '.join(map(str, other))}")
    if any(m.static for _, m in layers):
        raise ValueError("the GPU kernels are weight-only: this model quantizes activations")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, layer in layers:
            if runs_on_gpu_kernels(layer):
                parent, _, attr = name.rpartition(".")
                kernel = HalfLinear(layer) if layer.bits == HALF_BITS else TritonLinear(layer)
                setattr(modules[parent] if parent else model, attr, kernel)
    return model
