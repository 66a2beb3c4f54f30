"""A subnet under a policy: the dense fp32 model, the widths of its layers, their ranges.

The search scores it, ``local-cpu`` times it, and export writes it; all three build it
here, so they quantize the same layers on the same calibration samples.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from nas._space import Config
from nas.quant._calibrate import Ranges, calibrate
from nas.quant._fake import fake_quantize
from nas.quant._layers import MAX_INTEGER_BITS
from nas.quant._modules import module_bits
from nas.quant._policy import split_config, uniform_policy
from nas.quant._size import size_bytes

BYTES_PER_MB = 1_000_000
"""Sizes are in MB of 10**6 bytes, as ``--size-budget 2MB`` reads them."""


@dataclass(frozen=True)
class QuantizedSubnet:
    """A dense fp32 subnet, the bits of its quantized layers and their calibrated ranges."""

    arch: Config
    model: nn.Module
    bits: dict[str, int]
    ranges: Ranges

    @property
    def size_mb(self) -> float:
        return size_bytes(self.model, self.bits, calibrated=len(self.ranges)) / BYTES_PER_MB

    def fake_quantized(self) -> nn.Module:
        """A copy of the model with its quantized layers as ``QuantizedLayer`` s."""
        return fake_quantize(copy.deepcopy(self.model), self.bits, self.ranges)


def policy_of(supernet: Any, config: Mapping[str, Any], mode: str) -> tuple[Config, dict[str, int]]:
    """The architecture (a config of ``supernet.space``) and the unit -> bits policy of
    ``config`` under ``mode`` (``mixed``: its bit genes; ``int8``: every unit 8-bit)."""
    if mode == "mixed":
        return split_config(config, supernet.space)
    arch = supernet.space.config(config)
    return arch, uniform_policy(supernet.quant_modules(arch), 8) if mode == "int8" else {}


def quantized_subnet(supernet: Any, task: Any, config: Mapping[str, Any], *, mode: str,
                     batches: list[Any] | None) -> QuantizedSubnet:
    """Extract ``config``'s architecture and calibrate the layers its policy quantizes on
    ``batches`` (:func:`~nas.quant.calibration_batches`); ``None``: weight-only, nothing
    to calibrate. Layers at 16 bits (fp16) or 32 are never calibrated."""
    arch, policy = policy_of(supernet, config, mode)
    model = supernet.extract(arch).eval()
    bits = module_bits(model, supernet.quant_modules(arch), policy)
    integer = [name for name, width in bits.items() if width <= MAX_INTEGER_BITS]
    ranges = calibrate(model, integer, task, batches) if integer and batches is not None else {}
    return QuantizedSubnet(arch, model, bits, ranges)
