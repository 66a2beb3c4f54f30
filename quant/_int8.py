"""Real int8 kernels for a calibrated subnet on the CPU (torch's fbgemm/oneDNN ops).

Each 8-bit layer becomes a module that quantizes its input to the calibrated grid, runs
torch's integer kernel on the int8 weight (per channel, the same integers as the fake
quantization) and returns its output, requantized to the calibrated output grid, in
float. This is what a latency measured "with int8 kernels" times, and what the fake
quantization must agree with. Layers the forward pass never calls as modules (their
weights read by functional code) keep their rounded weights in float.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from nas.quant._calibrate import Ranges
from nas.quant._fake import activation_quants, fake_quantize
from nas.quant._quantizers import ActivationQuant, quantize_weight


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch 2.13 deprecates quantized tensors with a warning on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated", category=UserWarning)
        yield


def _qweight(weight: Tensor) -> Tensor:
    q, scales = quantize_weight(weight, 8)
    zero = torch.zeros(scales.shape, dtype=torch.long)
    return torch._make_per_channel_quantized_tensor(q, scales.double(), zero, 0)


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and static 8-bit input and output grids."""

    def __init__(self, linear: nn.Linear, inp: ActivationQuant, out: ActivationQuant) -> None:
        super().__init__()
        self.inp, self.out = inp, out
        self.out_features = linear.out_features
        self.register_buffer("weight", linear.weight.detach().clone())  # read by some ops
        bias = linear.bias.detach().float() if linear.bias is not None else None
        with _quiet():
            self._packed = torch.ops.quantized.linear_prepack(_qweight(linear.weight), bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        with _quiet():
            xq = torch.quantize_per_tensor(x.reshape(-1, shape[-1]).contiguous(),
                                           self.inp.scale, self.inp.zero_point, torch.quint8)
            y = torch.ops.quantized.linear(xq, self._packed, self.out.scale, self.out.zero_point)
            return y.dequantize().reshape(*shape[:-1], self.out_features)


class Int8Conv2d(nn.Module):
    """``nn.Conv2d`` (grouped and depthwise too) with int8 weights and static grids."""

    def __init__(self, conv: nn.Conv2d, inp: ActivationQuant, out: ActivationQuant) -> None:
        super().__init__()
        self.inp, self.out = inp, out
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = conv.bias.detach().float() if conv.bias is not None else None
        with _quiet():
            self._packed = torch.ops.quantized.conv2d_prepack(
                _qweight(conv.weight), bias, list(conv.stride), list(conv.padding),
                list(conv.dilation), conv.groups,
            )

    def forward(self, x: Tensor) -> Tensor:
        with _quiet():
            xq = torch.quantize_per_tensor(x.float(), self.inp.scale, self.inp.zero_point,
                                           torch.quint8)
            y = torch.ops.quantized.conv2d(xq, self._packed, self.out.scale, self.out.zero_point)
            return y.dequantize()


def int8_kernels(model: nn.Module, bits: Mapping[str, int], ranges: Ranges) -> nn.Module:
    """``model`` with every calibrated 8-bit ``nn.Linear``/``nn.Conv2d`` of ``bits``
    replaced by its integer-kernel module (in place; returns ``model``). Other layers of
    ``bits`` are fake-quantized as :func:`~nas.quant.fake_quantize` does.

    Raises:
        ValueError: a width other than 8 (torch's CPU kernels are int8 only).
    """
    other = {name: b for name, b in bits.items() if b != 8}
    if other:
        raise ValueError(f"int8 kernels run 8-bit layers only, got {other}")
    quants = activation_quants(ranges)
    modules = dict(model.named_modules())
    replaced = set()
    for name in bits:
        module = modules[name]
        if name not in quants or not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        kernel = Int8Linear if isinstance(module, nn.Linear) else Int8Conv2d
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else model, attr, kernel(module, *quants[name]))
        replaced.add(name)
    rest = {name: b for name, b in bits.items() if name not in replaced}
    fake_quantize(model, rest, {n: r for n, r in ranges.items() if n in rest})
    return model
