"""The ``local-cpu`` target: latency measured on this machine's CPU."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from nas._hardware import HARDWARE, HardwareTarget, MemoryEstimate, Provenance
from nas._limits import MAX_REPEATS, check_count, check_threads
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._memory import measure_memory
from nas.hardware._quant_latency import check_bits
from nas.hardware._timing import cpu_model, median_ms, torch_threads
from nas.quant import int8_kernels

logger = logging.getLogger(__name__)


class LocalCPUTarget(HardwareTarget):
    """Measures a subnet here: extract it dense, time ``task.latency_probe(model)``.

    Batch 1 on the CPU, ``threads`` intra-op threads (restored afterwards), ``warmup``
    untimed runs, then the median of ``repeats`` runs. Not thread safe: it changes
    torch's process-wide thread count while it measures.

    Args:
        threads: intra-op threads while timing (1 by default: a figure that does not
            depend on how busy the other cores are).
        warmup: untimed runs first.
        repeats: timed runs; the median is returned.
    """

    measures = True

    name = "local-cpu"
    description = "this machine's CPU, measured (batch 1, fixed thread count)"

    def __init__(self, *, threads: int = 1, warmup: int = 3, repeats: int = 10) -> None:
        self.threads = check_threads(threads)
        self.warmup = check_count(warmup, name="warmup", low=0, high=MAX_REPEATS)
        self.repeats = check_count(repeats, name="repeats", low=1, high=MAX_REPEATS)

    quant_bits = (32, 8)
    """fp32 and int8: the widths torch's CPU kernels run (SimQ-NAS's choices)."""

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        latency = self._time(supernet.extract(config).to("cpu").eval(), task)
        logger.debug("local-cpu: %s -> %.3f ms", config.key, latency)
        return latency

    def quantized_latency_ms(self, supernet: Supernet, arch: Config, model: nn.Module,
                             task: Task) -> float:
        """``model`` measured with its 8-bit layers on torch's integer kernels (static
        grids)."""
        check_bits(model, self.name, self.quant_bits)
        return self._time(int8_kernels(copy.deepcopy(model).to("cpu").eval()), task)

    def _time(self, model: nn.Module, task: Task) -> float:
        probe = task.latency_probe(model)
        with torch_threads(self.threads), torch.inference_mode():
            return median_ms(probe, warmup=self.warmup, repeats=self.repeats)

    def _memory(self, supernet: Supernet, config: Config, task: Task) -> MemoryEstimate:
        """Measured here: weights counted, the probe's activation peak tracked
        (:func:`~nas.hardware._memory.measure_memory`), the KV cache by formula."""
        model = supernet.extract(config).to("cpu").eval()
        report = measure_memory(model, task.latency_probe(model),
                                shape=supernet.describe(config), workload=task.workload())
        return MemoryEstimate(report.weights_bytes, report.peak_activation_bytes,
                              report.kv_cache_bytes, method="measured")

    def memory_fingerprint(self, family: str) -> str:
        return f"measured:torch-{torch.__version__}"

    def memory_provenance(self) -> Provenance:
        return Provenance(
            method="measured",
            source="measured here: weights and buffers counted, the activation peak of one "
                   "run of the task's latency probe (batch 1) tracked operator by operator, "
                   "the KV cache by formula (part of the activations)",
        )

    def provenance(self) -> Provenance:
        return Provenance(
            method="measured",
            source=f"measured here on {cpu_model()} (torch {torch.__version__})",
            notes=(
                f"Each figure is the median of {self.repeats} timed runs after "
                f"{self.warmup} warm-up runs of the task's latency probe (batch 1) with "
                f"{self.threads} intra-op thread(s).",
                "Other processes on this machine add noise; figures are comparable only "
                "on the same machine and thread count (see the fingerprint).",
            ),
            details={"cpu": cpu_model(), "threads": self.threads, "torch": torch.__version__,
                     "warmup": self.warmup, "repeats": self.repeats},
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{cpu_model()}:{self.threads}t:torch-{torch.__version__}"


@HARDWARE.register("local-cpu", description=LocalCPUTarget.description)
def local_cpu() -> HardwareTarget:
    """This machine's CPU, measured."""
    return LocalCPUTarget()
