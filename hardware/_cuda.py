"""The ``cuda`` target: latency measured on this machine's CUDA GPU with CUDA events."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nas._extras import require
from nas._hardware import HARDWARE, HardwareTarget, Provenance
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._profile import measure_latency_cuda
from nas.hardware._quant_latency import check_bits
from nas.quant._gpu import GPU_BITS, gpu_kernels

_NO_CUDA = ("no CUDA device on this machine (torch.cuda.is_available() is False); "
            "measure on local-cpu, or on a GPU machine running `nas agent` via "
            "remote:HOST:PORT")


class CUDATarget(HardwareTarget):
    """Measures a subnet on a CUDA GPU: extract it dense, move it to the device, time the
    task's latency probe by CUDA events until the median's 95% interval is within
    ``rel_ci`` (:func:`nas.hardware._profile.measure_latency_cuda`).

    Args:
        device: the CUDA device index.
        warmup: untimed runs first.
        min_repeats: the fewest timed runs before the rule may stop.
        max_repeats: timed runs at most.
        rel_ci: stop once the median's 95% interval is within this fraction of it.
    """

    measures = True

    name = "cuda"
    description = "this machine's CUDA GPU, measured (CUDA events, batch 1)"

    def __init__(self, *, device: int = 0, warmup: int = 10, min_repeats: int = 20,
                 max_repeats: int = 200, rel_ci: float = 0.02) -> None:
        self.device = device
        self.options = {"warmup": warmup, "min_repeats": min_repeats,
                        "max_repeats": max_repeats, "rel_ci": rel_ci}

    quant_bits = GPU_BITS
    """Weight-only widths: fp16, and int8/int4 on the Triton GEMMs (:mod:`nas.quant._gpu`)."""
    quant_activations = False

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        return self._time(supernet.extract(config), task)

    def quantized_latency_ms(self, supernet: Supernet, arch: Config, model: nn.Module,
                             task: Task) -> float:
        """``model`` measured with its weight-only layers on the GPU kernels (fp16
        products, Triton int8/int4 GEMMs dequantizing in-kernel)."""
        check_bits(model, self.name, self.quant_bits)
        if not torch.cuda.is_available():
            raise ValueError(_NO_CUDA)
        require("triton", purpose="int8/int4 GEMMs on the GPU")
        return self._time(gpu_kernels(copy.deepcopy(model)), task)

    def _time(self, model: nn.Module, task: Task) -> float:
        if not torch.cuda.is_available():
            raise ValueError(_NO_CUDA)
        model = model.to(f"cuda:{self.device}").eval()
        probe = task.latency_probe(model)
        return measure_latency_cuda(probe, device=self.device, **self.options).median_ms

    def _gpu_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if torch.cuda.is_available() else "none"

    def provenance(self) -> Provenance:
        return Provenance(
            method="measured",
            source=f"measured here on CUDA device {self.device} ({self._gpu_name()}, "
                   f"torch {torch.__version__})",
            notes=("CUDA events time the GPU's timeline, one synchronisation per run; the "
                   "median of at least "
                   f"{self.options['min_repeats']} runs after {self.options['warmup']} "
                   f"warm-up runs, repeated until its 95% interval is within "
                   f"±{self.options['rel_ci']:.0%}.",)
                  + (() if torch.cuda.is_available() else (_NO_CUDA,)),
            details={"gpu": self._gpu_name(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, **self.options},
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self._gpu_name()}:torch-{torch.__version__}"


@HARDWARE.register("cuda", description=CUDATarget.description)
def cuda() -> HardwareTarget:
    """This machine's CUDA GPU, measured."""
    return CUDATarget()
