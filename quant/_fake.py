"""Fake quantization of a dense subnet: what the integer kernels compute, in float.

Each quantized layer becomes a :class:`~nas.quant.QuantizedLayer`: its weight rounded to
its per-channel grid (symmetric) and, for the static scheme, its input and output
rounded to their calibrated 8-bit grids (per tensor, asymmetric): the Q/DQ pattern that
ONNX Runtime fuses into integer kernels. The weight-only scheme (GPU) rounds the weights
only.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from nas.quant._calibrate import Ranges
from nas.quant._layers import Grids, quantize_layers
from nas.quant._quantizers import ActivationQuant

ACTIVATION_BITS = 8
"""Activations of every quantized layer are 8-bit (W{b}A8): lower-bit activations lose
too much accuracy without retraining, and integer kernels take 8-bit inputs."""


def activation_quants(ranges: Ranges) -> Grids:
    """The 8-bit input and output grids of every calibrated layer."""
    return {name: (ActivationQuant.from_range(*inp, bits=ACTIVATION_BITS),
                   ActivationQuant.from_range(*out, bits=ACTIVATION_BITS))
            for name, (inp, out) in ranges.items()}


def fake_quantize(
    model: nn.Module, bits: Mapping[str, int], ranges: Ranges | None
) -> nn.Module:
    """Quantize ``model`` in place: the layers in ``bits`` to their widths and, when
    ``ranges`` is given (static scheme), their inputs and outputs to 8 bits. Returns
    ``model``."""
    return quantize_layers(model, bits, activation_quants(ranges) if ranges is not None else None)
