"""The quantized latency model: what integer kernels add to, and save from, a float subnet.

Measured here (torch's int8 CPU kernels, batch 1), an 8-bit layer pays for quantizing
its input and dequantizing its output on every call, and saves on its multiply-accumulates.
So a quantized subnet's latency is its fp32 latency plus::

    delta = call_ms * calls + ms_per_melem * melems - saved_ms_per_mmac * mmacs

over the calls of its quantized layers during the task's probe
(:func:`nas.quant._work.quantized_work`). The three costs are fitted by non-negative
least squares on the difference between the int8 and fp32 timings of the same subnets,
so an overhead never turns into a saving or the reverse, and each can be read: on our
HAT G2P models about 35 µs per call, which is why narrow layers run slower in int8.

Widths below 8 (``MODELLED_BITS``) have no CPU kernel here; they are priced as 8-bit
layers (what a runtime that unpacks sub-byte weights to int8 runs: ONNX Runtime's
MatMulNBits does so for 4 bits). Their gain is size, not speed, and a target that
prices them says they are modelled, not measured.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._latency_model import nonnegative_fit
from nas.hardware._profile import Measurement
from nas.quant import BITS_PREFIX, QuantizedLayer, int8_kernels, joint_space
from nas.quant._subnet import quantized_subnet
from nas.quant._work import QuantizedWork, quantized_work

MODELLED_BITS: tuple[int, ...] = (8, 6, 4, 2)
"""The widths a modelled target prices (the issue's simulated set; 8 is measured here,
the others are priced as 8)."""


@dataclass(frozen=True)
class QuantizedCosts:
    """The three costs of the delta model, in milliseconds.

    Attributes:
        call_ms: per quantized-layer call (quantize, integer kernel launch, dequantize).
        ms_per_melem: per million elements quantized or dequantized.
        saved_ms_per_mmac: saved per million MACs done on integers rather than floats.
    """

    call_ms: float
    ms_per_melem: float
    saved_ms_per_mmac: float

    def delta_ms(self, work: QuantizedWork) -> float:
        """What quantizing adds to the fp32 latency (negative where it saves)."""
        return (self.call_ms * work.calls + self.ms_per_melem * work.melems
                - self.saved_ms_per_mmac * work.mmacs)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def fit_quantized_costs(works: Sequence[QuantizedWork], delta_ms: np.ndarray) -> QuantizedCosts:
    """NNLS fit of the costs to measured ``quantized - fp32`` latencies of the same subnets."""
    design = np.array([[w.calls, w.melems, -w.mmacs] for w in works])
    call, elem, mac = nonnegative_fit(design, np.asarray(delta_ms, float))
    return QuantizedCosts(float(call), float(elem), float(mac))


def check_bits(model: nn.Module, target: str, bits: Sequence[int]) -> None:
    """Refuse a model with a quantized layer of a width ``target`` does not price.

    Raises:
        ValueError: naming the widths found and the ones the target has.
    """
    other = sorted({m.bits for m in model.modules()
                    if isinstance(m, QuantizedLayer) and m.bits not in bits})
    if other:
        raise ValueError(f"{target} has latencies for {', '.join(map(str, bits))}-bit layers, "
                         f"not {', '.join(map(str, other))}-bit ones")


@dataclass(frozen=True)
class QuantizedCalibration:
    """The delta model fitted on subnets measured in fp32 and in int8 here.

    Attributes:
        costs: fitted on all ``n`` subnets.
        heldout: error of the whole prediction (fp32 model plus delta, both fitted on
            the others) on the held-out subnets' int8 timings (``median_ape``, ``mape``,
            ``rmse_ms``, ``kendall_tau``, ``n``).
        n: subnets measured.
        policies: how their bit widths were drawn.
    """

    costs: QuantizedCosts
    heldout: dict[str, float]
    n: int
    policies: str

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "costs": self.costs.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> QuantizedCalibration:
        return cls(costs=QuantizedCosts(**data["costs"]), heldout=dict(data["heldout"]),
                   n=int(data["n"]), policies=str(data["policies"]))


RANDOM_POLICIES = ("each unit 8-bit with probability p, else fp32; p drawn uniformly in "
                   "[0, 1] per subnet")


def random_policies(supernet: Supernet, configs: Sequence[Config], seed: int) -> list[Config]:
    """Joint configs (bits 32 or 8) of ``configs``, as :data:`RANDOM_POLICIES` says: from
    nearly fp32 to nearly all int8, so calls, elements and MACs vary independently."""
    units = supernet.quant_units()
    space = joint_space(supernet.space, units, (32, 8))
    rng = np.random.default_rng(seed)
    joint = []
    for config in configs:
        p = rng.uniform()
        joint.append(space.config({**config, **{f"{BITS_PREFIX}{u.name}":
                                                (8 if rng.uniform() < p else 32) for u in units}}))
    return joint


def measure_int8(
    supernet: Supernet, task: Task, config: Config, batches: list[Any],
    measure: Callable[[Callable[[], Any]], Measurement],
) -> tuple[QuantizedWork, Measurement]:
    """The quantized work of a joint (32/8-bit) config and its probe timed by ``measure``
    with its 8-bit layers on torch's integer kernels."""
    fake = quantized_subnet(supernet, task, config, mode="mixed", batches=batches).fake_quantized()
    work = quantized_work(fake, task)
    real = int8_kernels(copy.deepcopy(fake))
    with torch.inference_mode():
        return work, measure(task.latency_probe(real))
