"""What a subnet's quantized layers do on one inference: calls, MACs, elements.

A quantized latency model prices these (:mod:`nas.hardware._quant_latency`): every call
of an integer kernel quantizes its input and dequantizes its output (a cost per call
and per element) and does its multiply-accumulates on integers (cheaper per MAC than in
float). They are counted by running the task's latency probe once on the
fake-quantized model with a hook on every :class:`~nas.quant.QuantizedLayer`, so
decoder steps, beams and whatever else the probe runs are counted as they happen, for
every family alike. Layers whose weights functional code reads directly (never called
as modules) are not counted: integer kernels do not run them either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nas.quant._layers import QuantizedLayer

MEGA = 1e6


@dataclass(frozen=True)
class QuantizedWork:
    """Totals over the calls of a model's quantized layers during one probe.

    Attributes:
        calls: quantized-layer calls.
        mmacs: their multiply-accumulates, millions.
        melems: elements they quantize (inputs) and dequantize (outputs), millions.
    """

    calls: float = 0.0
    mmacs: float = 0.0
    melems: float = 0.0


def quantized_work(model: nn.Module, task: object) -> QuantizedWork:
    """Run ``task.latency_probe(model)`` once and count what its quantized layers do."""
    totals = {"calls": 0.0, "macs": 0.0, "elems": 0.0}

    def count(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        per_output = math.prod(layer.shape[1:])  # K for a linear; Cin/groups*kh*kw for a conv
        totals["calls"] += 1
        totals["macs"] += output.numel() * per_output
        totals["elems"] += x.numel() + output.numel()

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, QuantizedLayer)]
    try:
        with torch.inference_mode():
            task.latency_probe(model)()
    finally:
        for handle in handles:
            handle.remove()
    return QuantizedWork(totals["calls"], totals["macs"] / MEGA, totals["elems"] / MEGA)
