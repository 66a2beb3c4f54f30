"""The hardware target contract: latency (and memory) of a subnet on a named device."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nas._registry import Registry
from nas._space import Config
from nas._supernet import SubnetShape, Supernet
from nas._task import Task, Workload


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


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one batch-1 inference of the task's workload, bytes.

    ``activation_bytes`` is the peak of what the inference allocates beyond the weights;
    ``kv_cache_bytes`` is the part of it the decoder's self-attention cache holds at the
    last step (0 where none applies). ``method`` says how: ``measured`` or ``modelled``.
    """

    weights_bytes: int
    activation_bytes: int
    kv_cache_bytes: int = 0
    method: str = "modelled"

    @property
    def peak_bytes(self) -> int:
        """Weights plus the activation peak: what the inference needs at its worst."""
        return self.weights_bytes + self.activation_bytes


class MemoryModel(abc.ABC):
    """Memory of a subnet of one supernet family from its shapes alone (no weights).

    ``error`` holds the model's measured error against this machine's measurements over
    a sample of subnets (``{"mape": ..., "max_ape": ..., "n": ...}``; empty if never
    measured); ``version`` changes whenever its figures could (cache key part).
    """

    version: str = "1"

    @property
    def error(self) -> Mapping[str, float]:
        return {}

    @abc.abstractmethod
    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate: ...


MEMORY_MODELS: Registry[MemoryModel] = Registry("memory model", plugins=("nas.hardware",))
"""Supernet family -> its :class:`MemoryModel` (``nas.hardware`` registers them)."""


def model_memory(shape: SubnetShape, workload: Workload) -> MemoryEstimate:
    """The modelled memory of the subnet ``shape`` under ``workload``.

    Raises:
        ValueError: no memory model for the shape's family (naming those there are).
    """
    if shape.family not in MEMORY_MODELS:
        raise ValueError(
            f"no memory model for supernet family {shape.family!r}; memory is modelled for "
            f"{', '.join(MEMORY_MODELS.names())}, and measured on local-cpu and remote:HOST:PORT"
        )
    return MEMORY_MODELS.create(shape.family).estimate(shape, workload)


class HardwareTarget(abc.ABC):
    """A named device that gives the latency of a subnet of a supernet, and its memory.

    ``latency_ms`` validates the config and calls ``_latency_ms``. Results are in
    milliseconds for one batch-1 inference of the task's :class:`~nas.Workload`.
    ``memory`` likewise calls ``_memory``, which models it from the subnet's shapes
    unless the target measures it.
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

    def memory(self, supernet: Supernet, config: Config, task: Task) -> MemoryEstimate:
        """The memory of one batch-1 inference of subnet ``config`` (weights plus the
        activation peak, KV cache included) on this target; validates, then calls
        ``_memory``."""
        return self._memory(supernet, supernet.space.config(config), task)

    def _memory(self, supernet: Supernet, config: Config, task: Task) -> MemoryEstimate:
        """Modelled from the subnet's shapes (:data:`MEMORY_MODELS`); targets that
        measure override it."""
        return model_memory(supernet.describe(config), task.workload())

    def memory_fingerprint(self, family: str) -> str:
        """Changes whenever this target's memory figures of subnets of ``family`` could
        (cache key part): by default the family's model and its version."""
        version = MEMORY_MODELS.create(family).version if family in MEMORY_MODELS else "none"
        return f"memory-model:{family}:{version}"

    def memory_provenance(self) -> Provenance:
        """Where the memory figures come from: by default the shape models, with each
        family's error against measurements."""
        errors = {family: MEMORY_MODELS.create(family).error for family in MEMORY_MODELS.names()}
        return Provenance(
            method="predicted",
            source="modelled from the subnet's shapes: weights and buffers counted, the "
                   "activation peak and KV cache of the task's batch-1 workload by formula",
            error={f"{family}_{k}": v for family, e in errors.items() for k, v in e.items()},
            notes=tuple(
                f"memory model {family}: mean error {e['mape']:.1%}, worst {e['max_ape']:.1%} "
                f"over {int(e['n'])} subnets measured on this machine"
                for family, e in errors.items() if e),
        )

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
"""Named hardware targets: ``name -> () -> HardwareTarget`` (``nas hw list``)."""


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
    """The names of the registered hardware targets."""
    return HARDWARE.names()

