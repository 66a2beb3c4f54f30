"""The arithmetic of quantization: scales, zero points, integer grids, fake quantization.

Two schemes, those SimQ-NAS uses and ONNX Runtime and torch run as real int8 kernels:

- **weights**: per output channel, symmetric, min-max: ``scale = max|w| / qmax`` with
  ``qmax = 2**(bits-1) - 1`` and the restricted grid ``[-qmax, qmax]`` (zero point 0),
  so ``-w`` quantizes to ``-q(w)`` and an int8 weight is exactly an ONNX
  ``DequantizeLinear`` of an ``int8`` initializer;
- **activations**: per tensor, asymmetric, from the calibrated range ``[lo, hi]``
  (widened to hold 0): ``scale = (hi - lo) / (2**bits - 1)``, an integer zero point in
  ``[0, 2**bits - 1]`` (``uint8`` for 8 bits).

Fake quantization goes through :func:`torch.fake_quantize_per_channel_affine` and
:func:`torch.fake_quantize_per_tensor_affine`, which the ONNX exporter writes as
``QuantizeLinear``/``DequantizeLinear`` pairs: the graph that ONNX Runtime fuses into
integer kernels computes what the fake-quantized model computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

FLOAT_BITS = 32
"""The bit width that means "not quantized"."""

HALF_BITS = 16
"""Weights stored as fp16 (weight-only GPU policies); activations stay as they are."""


def weight_qmax(bits: int) -> int:
    """The largest integer of a symmetric ``bits``-bit weight grid."""
    if not 2 <= bits <= 8:
        raise ValueError(f"weights quantize to 2 to 8 bits, got {bits}")
    return 2 ** (bits - 1) - 1


def weight_scales(weight: Tensor, bits: int) -> Tensor:
    """Per-output-channel symmetric scales of ``weight`` (axis 0), one per channel; a
    channel of zeros gets scale 1 (any scale represents it exactly)."""
    absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1).float()
    scales = absmax / weight_qmax(bits)
    return torch.where(scales > 0, scales, torch.ones_like(scales))


def quantize_weight(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The integer weights (``int8`` dtype for every width up to 8) and their per-channel
    scales: ``weight ~= q * scale[:, None, ...]``."""
    scales = weight_scales(weight, bits)
    qmax = weight_qmax(bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q = torch.clamp(torch.round(weight.detach().float() / scales.reshape(shape)), -qmax, qmax)
    return q.to(torch.int8), scales


def fake_quantize_weight(weight: Tensor, bits: int) -> Tensor:
    """``weight`` rounded to its ``bits``-bit per-channel grid, back in float (what the
    integer kernel multiplies by); ``bits`` 32 returns it unchanged, 16 rounds to fp16."""
    if bits >= FLOAT_BITS:
        return weight
    if bits == HALF_BITS:
        return weight.half().to(weight.dtype)
    scales = weight_scales(weight, bits)
    qmax = weight_qmax(bits)
    zero = torch.zeros(scales.shape, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(
        weight, scales.to(weight.device), zero, 0, -qmax, qmax
    )


@dataclass(frozen=True)
class ActivationQuant:
    """Per-tensor asymmetric quantization of one activation: ``x ~= (q - zero) * scale``
    with ``q`` in ``[0, 2**bits - 1]``."""

    scale: float
    zero_point: int
    bits: int = 8

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    @classmethod
    def from_range(cls, lo: float, hi: float, bits: int = 8) -> ActivationQuant:
        """The grid over the calibrated range ``[lo, hi]``, widened to hold 0 (padding
        and ReLU outputs must stay exact)."""
        if not 2 <= bits <= 8:
            raise ValueError(f"activations quantize to 2 to 8 bits, got {bits}")
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        qmax = 2**bits - 1
        scale = (hi - lo) / qmax if hi > lo else 1.0
        zero_point = int(min(max(round(-lo / scale), 0), qmax))
        return cls(scale=scale, zero_point=zero_point, bits=bits)

    def fake(self, x: Tensor) -> Tensor:
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, 0, self.qmax
        )


def quantized_bytes(numel: int, channels: int, bits: int) -> int:
    """Bytes a weight of ``numel`` values over ``channels`` output channels takes at
    ``bits``: each channel's integers packed into whole bytes, plus one fp32 scale per
    channel (fp32 and fp16: no scales)."""
    if bits >= FLOAT_BITS:
        return 4 * numel
    if bits == HALF_BITS:
        return 2 * numel
    per_channel = numel // channels
    return channels * (-(-per_channel * bits // 8)) + 4 * channels
