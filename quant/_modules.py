"""Which modules of a dense subnet a policy quantizes, and at how many bits."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from nas.quant._quantizers import FLOAT_BITS

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layers with a weight matrix (or kernel) that integer kernels run."""


def module_bits(
    model: nn.Module, unit_modules: Mapping[str, tuple[str, ...]], policy: Mapping[str, int]
) -> dict[str, int]:
    """Module name -> bits for every quantizable module of a unit the policy quantizes
    (units at 32 bits and modules outside every unit are left out: they stay fp32).

    Raises:
        ValueError: the policy names a unit the subnet does not have active.
    """
    unknown = sorted(set(policy) - set(unit_modules))
    if unknown:
        raise ValueError(
            f"the policy gives bits to units {unknown} that this subnet does not have "
            f"(its units: {', '.join(unit_modules)})"
        )
    return {name: int(policy[unit]) for unit, names in unit_layers(model, unit_modules).items()
            if int(policy.get(unit, FLOAT_BITS)) < FLOAT_BITS for name in names}


def unit_layers(
    model: nn.Module, unit_modules: Mapping[str, tuple[str, ...]]
) -> dict[str, list[str]]:
    """Unit -> the quantizable layers of ``model`` at or under its prefixes (a unit
    without any, such as a FlexiBERT transform without weights, is left out)."""
    layers: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, QUANTIZABLE):
            continue
        for unit, prefixes in unit_modules.items():
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                layers.setdefault(unit, []).append(name)
    return layers
