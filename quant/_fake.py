"""Fake quantization of a dense subnet: what the integer kernels compute, in float.

Each quantized layer's weight is replaced by its rounded values (per channel,
symmetric) and, for the static scheme, its input and output are rounded to their
calibrated 8-bit grids (per tensor, asymmetric): the Q/DQ pattern that ONNX Runtime fuses
into integer kernels. The weight-only scheme (GPU) rounds the weights only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas.quant._calibrate import Ranges
from nas.quant._quantizers import ActivationQuant, fake_quantize_weight

ACTIVATION_BITS = 8
"""Activations of every quantized layer are 8-bit (W{b}A8): lower-bit activations lose
too much accuracy without retraining, and integer kernels take 8-bit inputs."""


def activation_quants(ranges: Ranges) -> dict[str, tuple[ActivationQuant, ActivationQuant]]:
    """The 8-bit input and output grids of every calibrated layer."""
    return {name: (ActivationQuant.from_range(*inp, bits=ACTIVATION_BITS),
                   ActivationQuant.from_range(*out, bits=ACTIVATION_BITS))
            for name, (inp, out) in ranges.items()}


def fake_quantize(
    model: nn.Module, bits: Mapping[str, int], ranges: Ranges | None
) -> nn.Module:
    """Quantize ``model`` in place: weights of the layers in ``bits`` to their widths and,
    when ``ranges`` is given (static scheme), their inputs and outputs to 8 bits.
    Returns ``model``."""
    quants = activation_quants(ranges) if ranges is not None else {}
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, width in bits.items():
            module = modules[name]
            module.weight.copy_(fake_quantize_weight(module.weight, width))
            if name in quants:
                inp, out = quants[name]
                module.register_forward_pre_hook(_input_hook(inp))
                module.register_forward_hook(_output_hook(out))
    return model


def _input_hook(quant: ActivationQuant) -> Any:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (quant.fake(inputs[0]), *inputs[1:])
    return hook


def _output_hook(quant: ActivationQuant) -> Any:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return quant.fake(output)
    return hook
