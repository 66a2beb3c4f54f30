"""The size of a quantized subnet: what its weights file holds."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from nas.quant._quantizers import quantized_bytes

ACTIVATION_QPARAM_BYTES = 5
"""An activation grid stored with its model: an fp32 scale and a uint8 zero point."""


def size_bytes(model: nn.Module, bits: Mapping[str, int], *, calibrated: int = 0) -> int:
    """Bytes of every parameter and buffer of ``model``: the weights of the layers in
    ``bits`` as packed integers plus one fp32 scale per output channel, everything else
    fp32; plus ``calibrated`` layers' input and output grids."""
    modules = dict(model.named_modules())
    quantized = {f"{name}.weight": (modules[name].weight, width) for name, width in bits.items()}
    total = 0
    seen: set[int] = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen:
            continue  # tied weights are stored once
        seen.add(id(tensor))
        if name in quantized:
            total += quantized_bytes(tensor.numel(), tensor.shape[0], quantized[name][1])
        else:
            total += tensor.numel() * tensor.element_size()
    return total + 2 * ACTIVATION_QPARAM_BYTES * calibrated
