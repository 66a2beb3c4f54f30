"""HAWQ on a subnet: per-unit sensitivities of a supernet's subnet and the bit
allocation of the integer program, the baseline the joint search must beat.

The units are the supernet's own (:meth:`~nas.Supernet.quant_modules`), the loss the
task's on the fixed calibration samples, so the ranking is of the same genes the joint
search sets. HAWQ keeps activations out of the score (weights only); here every
quantized layer's activations are 8-bit whatever its weights' width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nas._space import Config
from nas.quant._allocate import allocate_bits
from nas.quant._modules import unit_layers
from nas.quant._quantizers import quantized_bytes
from nas.quant._sensitivity import sensitivity
from nas.quant._size import ACTIVATION_QPARAM_BYTES, size_bytes

HUTCHINSON_SAMPLES = 16
"""Rademacher vectors per trace (PyHessian stops near 1e-3 relative change; 16 ranks
our units stably)."""


def task_loss(task: Any, batches: list[tuple[Tensor, ...]]):
    """``loss_fn(model)``: the task's mean loss over ``batches`` (a fixed dataset)."""
    def loss_fn(model: nn.Module) -> Tensor:
        return torch.stack([task.loss(model, batch) for batch in batches]).mean()
    return loss_fn


def subnet_sensitivity(supernet: Any, task: Any, arch: Config, bits: Sequence[int], *,
                       batches: list[tuple[Tensor, ...]], samples: int = HUTCHINSON_SAMPLES,
                       seed: int = 0) -> tuple[nn.Module, dict[str, list[str]],
                                               dict[str, dict[int, float]]]:
    """The dense subnet of ``arch``, its units' layers and HAWQ's Omega per unit and
    width."""
    model = supernet.extract(arch).eval()
    layers = unit_layers(model, supernet.quant_modules(arch))
    omega = sensitivity(model, task_loss(task, batches), layers, bits, samples=samples,
                        seed=seed)
    return model, layers, omega


def size_costs(model: nn.Module, layers: Mapping[str, Sequence[str]],
               bits: Sequence[int]) -> tuple[dict[str, dict[int, float]], float]:
    """Bytes per unit and width (packed weights, scales and, below 32 bits, the layers'
    two activation grids) and the bytes of everything outside the units."""
    modules = dict(model.named_modules())
    costs: dict[str, dict[int, float]] = {}
    for unit, names in layers.items():
        costs[unit] = {}
        for width in bits:
            total = 0
            for name in names:
                weight = modules[name].weight
                total += quantized_bytes(weight.numel(), weight.shape[0], width)
                if width < 32:
                    total += 2 * ACTIVATION_QPARAM_BYTES
            costs[unit][width] = float(total)
    weights = sum(modules[n].weight.numel() * 4 for names in layers.values() for n in names)
    return costs, float(size_bytes(model, {}) - weights)


def hawq_policy(omega: Mapping[str, Mapping[int, float]], model: nn.Module,
                layers: Mapping[str, Sequence[str]], *,
                size_budget_mb: float) -> tuple[dict[str, int], float]:
    """HAWQ-V3's integer program: the least total Omega whose model fits
    ``size_budget_mb`` (MB of 10**6 bytes); returns the policy and its size in MB.

    Raises:
        ValueError: even the cheapest widths exceed the budget.
    """
    bits = sorted({b for per_unit in omega.values() for b in per_unit})
    costs, fixed = size_costs(model, layers, bits)
    try:
        policy = allocate_bits(omega, costs, size_budget_mb * 1e6 - fixed)
    except ValueError:
        cheapest = fixed + sum(min(c.values()) for c in costs.values())
        raise ValueError(f"size budget {size_budget_mb:g} MB is below the smallest this subnet "
                         f"reaches ({cheapest / 1e6:.3f} MB at the lowest widths)") from None
    return policy, (fixed + sum(costs[u][b] for u, b in policy.items())) / 1e6
