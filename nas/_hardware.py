"""The hardware target contract: latency (and memory) of a subnet on a named device."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nas._registry import Registry
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task


@dataclass(frozen=True)
class Provenance:
    """Where a target's figures come from and how far to trust them.

    ``error`` holds the measured error of a predicted target on held-out measurements
    (``{"mape": 0.04, "rmse_ms": ..., "kendall_tau": ..., "n": ...}``); ``notes`` says in
    plain words where the model extrapolates.
    """

    method: str  # "measured", "predicted", or "calibrated" (a model fitted to this machine)
    source: str
    error: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


class HardwareTarget(abc.ABC):
    """A named device that gives the latency of a subnet of a supernet.

    ``latency_ms`` validates the config and calls ``_latency_ms``. Results are in
    milliseconds for one batch-1 inference of the task's :class:`~nas.Workload`.
    """

    name: str = ""
    description: str = ""

    quant_bits: tuple[int, ...] = ()
    """The bit widths this target gives quantized latencies for (32: float); empty when
    it has none. ``--quantize mixed`` searches these."""

    measures: bool = False
    """Whether figures come from running each subnet on the device (``local-cpu``,
    ``cuda``, ``remote:``): slow and noisy, so never a few-shot reference."""

    quant_activations: bool = True
    """Whether a quantized layer's input and output are quantized too on this target
    (W{b}A8 static, calibrated: CPU integer kernels); ``False``: weight-only (GPU
    kernels that dequantize weights in-kernel, activations in float)."""

    def latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        return self._latency_ms(supernet, supernet.space.config(config), task)

    def quantized_latency_ms(self, supernet: Supernet, arch: Config, model: nn.Module,
                             task: Task) -> float:
        """The latency of the subnet ``arch`` of ``supernet`` quantized as ``model``: its
        dense model whose quantized layers are :class:`~nas.quant.QuantizedLayer` s (left
        as it is). Measuring targets time ``model``; modelled ones price ``arch`` and
        what ``model``'s quantized layers do.

        Raises:
            ValueError: the target has no quantized latencies, or not for these widths.
        """
        raise no_quantized_latency(self.name)

    @property
    def quantized_fingerprint(self) -> str:
        """Changes whenever this target's quantized latencies could (a quantized
        evaluation's cache key part); the fingerprint unless a model prices them."""
        return self.fingerprint

    @abc.abstractmethod
    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float: ...

    @abc.abstractmethod
    def provenance(self) -> Provenance: ...

    @property
    def fingerprint(self) -> str:
        """Changes whenever this target's figures would change (cache key part)."""
        return self.name


QUANTIZING_TARGETS: tuple[str, ...] = ("local-cpu", "local-cpu-model", "rpi4", "xeon", "titanxp")
"""Targets that give quantized latencies (set ``quant_bits``), for messages."""

def no_quantized_latency(target: str) -> ValueError:
    return ValueError(
        f"hardware target {target!r} has no latency for quantized subnets yet; --quantize "
        f"needs one of: {', '.join(QUANTIZING_TARGETS)} (or use --quantize none)"
    )


HARDWARE: Registry[HardwareTarget] = Registry("hardware target", plugins=("nas.hardware",))


HARDWARE_SCHEMES: Registry[HardwareTarget] = Registry(
    "hardware scheme", plugins=("nas.hardware",))
"""Parameterised targets by the prefix of their name (``remote`` for
``remote:HOST:PORT``); each factory takes the whole name. The ``hardware`` package
registers them: the contract here never imports it."""


USER_SCHEME = "user"
"""The scheme of targets a user added with ``nas hw add``: ``user:NAME``, or ``NAME``
alone where no built-in target has it."""


def get_hardware(name: str) -> HardwareTarget:
    """The hardware target ``name`` (``rpi4``, ``xeon``, ``titanxp``, ``local-cpu``),
    ``remote:HOST:PORT`` for a device running ``nas agent``, ``ofa-lut:FOLDER`` for
    OFA's published latency lookup tables in FOLDER, or a target added with ``nas hw
    add``."""
    scheme, colon, _ = name.partition(":")
    if colon and scheme in HARDWARE_SCHEMES:
        return HARDWARE_SCHEMES.entry(scheme).factory(name)
    if name in HARDWARE or USER_SCHEME not in HARDWARE_SCHEMES:
        return HARDWARE.create(name)
    return HARDWARE_SCHEMES.entry(USER_SCHEME).factory(name)


def list_hardware() -> list[str]:
    return HARDWARE.names()

