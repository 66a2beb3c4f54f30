"""Scoring a subnet under a quantization policy: calibrate, fake-quantize, score, cost.

The architecture part of the config is extracted dense (equal in output to the
activated supernet), calibrated on the task's fixed calibration samples, and scored
fake-quantized: the modules quantized are the ones exported, so the search scores what
is shipped. Latency comes from the target's quantized path (integer kernels measured
on ``local-cpu``), size from the packed weights. A target whose kernels are weight-only
(``quant_activations`` false: ``cuda``) gets weight-only subnets, not calibrated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas._evaluator import Evaluator
from nas._space import Config, SearchSpace
from nas.quant._calibrate import CALIBRATION_SAMPLES, calibration_batches
from nas.quant._subnet import QuantizedSubnet, policy_of, quantized_subnet


class QuantizedEvaluator(Evaluator):
    """Accuracy, latency and ``size_mb`` of quantized subnets.

    Args:
        supernet, task, target, eval_limit: as for :class:`~nas.Evaluator`.
        mode: ``"none"`` (fp32, dense: for size objectives), ``"int8"`` (every unit 8-bit;
            configs are the supernet's) or ``"mixed"`` (configs of ``space``, the joint
            space of :func:`~nas.quant.joint_space`).
        space: the joint space (``mixed`` only).
        calibration_seed: which training samples calibrate (part of the cache key).
    """

    def __init__(self, supernet: Any, task: Any, target: Any, *, mode: str,
                 space: SearchSpace | None = None, eval_limit: int | None = None,
                 calibration_seed: int = 0) -> None:
        super().__init__(supernet, task, target, eval_limit=eval_limit)
        if (mode == "mixed") != (space is not None):
            raise ValueError("a joint space is given for --quantize mixed, and only then")
        self.mode = mode
        self.space = space if space is not None else supernet.space
        self.calibration_seed = calibration_seed
        self._batches: list[Any] | None = None

    @property
    def fingerprint(self) -> str:
        quantized = (f"|latency={self.target.quantized_fingerprint}|static={self.static}"
                     if self.mode != "none" else "")
        return (f"{super().fingerprint}|quantize={self.mode}|space={self.space.name}"
                f"|calibration={CALIBRATION_SAMPLES}@{self.calibration_seed}{quantized}")

    def policy_of(self, config: Config) -> tuple[Config, dict[str, int]]:
        """The architecture and the unit -> bits policy of ``config``."""
        return policy_of(self.supernet, config, self.mode)

    def _evaluate(self, config: Config) -> Mapping[str, float]:
        subnet = self.quantized(config)
        quantized = subnet.fake_quantized()
        metrics = self._score(quantized)
        metrics["latency_ms"] = self.latency_of(subnet, quantized)
        metrics["size_mb"] = subnet.size_mb
        return metrics

    def quantized(self, config: Config | Mapping[str, Any]) -> QuantizedSubnet:
        """The dense fp32 subnet of ``config`` with its policy resolved and calibrated."""
        return quantized_subnet(self.supernet, self.task, self.space.config(config),
                                mode=self.mode, batches=self.batches() if self.static else None)

    @property
    def static(self) -> bool:
        """Whether activations are quantized too (the target's scheme), so calibrated."""
        return bool(getattr(self.target, "quant_activations", True))

    def latency_of(self, subnet: QuantizedSubnet, quantized: Any = None) -> float:
        """The target's latency of a quantized subnet (its fp32 latency without bits);
        ``quantized``: its fake-quantized model, when already built."""
        if subnet.bits:
            model = quantized if quantized is not None else subnet.fake_quantized()
            return float(self.target.quantized_latency_ms(self.supernet, subnet.arch, model,
                                                          self.task))
        return float(self.target.latency_ms(self.supernet, subnet.arch, self.task))

    def batches(self) -> list[Any]:
        """The calibration batches, drawn once."""
        if self._batches is None:
            self._batches = calibration_batches(self.task, seed=self.calibration_seed)
        return self._batches
