"""The two latency laws a user's target is fitted with, and their leave-one-out error.

- **Few-shot** (:class:`FewShotLaw`): the new device's latency as a power law of
  reference devices' latencies for the same subnet (:class:`FewShotLatency`). Where the
  space has other devices (HAT's three, NAS-Bench-201's five) they are the prior: the
  same operations dominate everywhere, so a handful of measurements fixes the law.
- **Per-layer** (:class:`PerLayerLaw`): the structured model, non-negative costs per
  inference, per layer and per MAC. For the HAT family it is exactly the model of
  ``local-cpu-model`` (encoder layers and MACs, decoder steps, layer-steps and MACs at the
  task's probe workload); for other families one cost per layer of each kind plus one
  per million MACs and one per million parameters (fvcore counts of the dense subnet).

Both work on a design matrix, one row per subnet, so fitting, predicting and the
leave-one-out error are written once.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from nas._hardware import HardwareTarget, get_hardware
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._counters import count_macs, count_params
from nas.hardware._fewshot import FewShotLatency
from nas.hardware._latency_model import (
    MEGA,
    decoder_design,
    encoder_design,
    nonnegative_fit,
)
from nas.hardware._macs import DENSE_HAT_DECODING, Seq2SeqShape

HAT_FAMILY = "hat"
HAT_COLUMNS = ("inference", "decoder_layers", "encoder_layers", "encoder_mmacs",
               "decoder_steps", "decoder_layer_steps", "decoder_mmacs")


class LatencyLaw(abc.ABC):
    """Latency (ms) as a fitted function of a design row per subnet."""

    method: ClassVar[str]

    @abc.abstractmethod
    def design(self, supernet: Supernet, configs: Sequence[Config], task: Task) -> np.ndarray:
        """One row of inputs per config."""

    @abc.abstractmethod
    def shape_design(self, shapes: Sequence[Seq2SeqShape], task: Task) -> np.ndarray:
        """One row per encoder-decoder layer shape (a pruned HAT subnet has no config).

        Raises:
            ValueError: the law cannot price layer shapes (it was fitted on another
                family, or a reference cannot).
        """

    @abc.abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray) -> LatencyLaw: ...

    @abc.abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def min_samples(self) -> int:
        """The fewest measurements the fit and its leave-one-out error need."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def leave_one_out(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each measurement predicted by the law fitted on all the others."""
        out = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            out[i] = type(self).from_dict(self.to_dict()).fit(X[keep], y[keep]).predict(
                X[i:i + 1])[0]
        return out

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyLaw: ...


class FewShotLaw(LatencyLaw):
    """A power law of the named reference targets' latencies (their order is the
    columns'), resolved by name on first use."""

    method = "few-shot"

    def __init__(self, references: Sequence[str], *, intercept: float | None = None,
                 weights: Sequence[float] | None = None) -> None:
        if not references:
            raise ValueError("a few-shot law needs at least one reference target")
        self.references = tuple(references)
        self.intercept = intercept
        self.weights = None if weights is None else np.asarray(weights, dtype=float)

    @functools.cached_property
    def targets(self) -> list[HardwareTarget]:
        return [get_hardware(name) for name in self.references]

    def design(self, supernet: Supernet, configs: Sequence[Config], task: Task) -> np.ndarray:
        """Each reference target's latency of each config (ms)."""
        return np.array([[t.latency_ms(supernet, c, task) for t in self.targets]
                         for c in configs], dtype=float).reshape(len(configs), -1)

    def shape_design(self, shapes: Sequence[Seq2SeqShape], task: Task) -> np.ndarray:
        """Each reference's latency of each shape (references that price shapes only)."""
        for target in self.targets:
            if not hasattr(target, "shape_latency_ms"):
                raise ValueError(f"reference {target.name!r} prices subnets of a space, not "
                                 "encoder-decoder layer shapes (HAT's device models do)")
        return np.array([[t.shape_latency_ms(s, task) for t in self.targets]
                         for s in shapes], dtype=float).reshape(len(shapes), -1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> FewShotLaw:
        model = FewShotLatency().fit(X, y)
        self.intercept, self.weights = model.intercept_, np.asarray(model.weights_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.weights is None or self.intercept is None:
            raise RuntimeError("call fit() before predict()")
        return np.exp(self.intercept + np.log(np.asarray(X, dtype=float)) @ self.weights)

    def min_samples(self) -> int:
        return 5

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "references": list(self.references),
                "intercept": self.intercept,
                "weights": None if self.weights is None else self.weights.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FewShotLaw:
        return cls(data["references"], intercept=data.get("intercept"),
                   weights=data.get("weights"))


class PerLayerLaw(LatencyLaw):
    """Non-negative costs per inference, per layer and per MAC (see the module doc).

    ``columns`` are fixed by the first :meth:`design` (the layer kinds of the family) and
    stored, so a loaded law builds the same rows.
    """

    method = "per-layer"

    def __init__(self, columns: Sequence[str] = (), *,
                 coefficients: Sequence[float] | None = None) -> None:
        self.columns = tuple(columns)
        self.coefficients = None if coefficients is None else np.asarray(coefficients, float)

    def design(self, supernet: Supernet, configs: Sequence[Config], task: Task) -> np.ndarray:
        if supernet.family == HAT_FAMILY:
            self.columns = self.columns or HAT_COLUMNS
            return _hat_design(supernet, configs, task)
        rows = [_generic_row(supernet, c, task) for c in configs]
        if not self.columns:
            kinds = sorted({k for row in rows for k in row} - {"mmacs", "mparams"})
            self.columns = ("inference", *kinds, "mmacs", "mparams")
        return np.array([[1.0 if col == "inference" else row.get(col, 0.0)
                          for col in self.columns] for row in rows])

    def shape_design(self, shapes: Sequence[Seq2SeqShape], task: Task) -> np.ndarray:
        if self.columns != HAT_COLUMNS:
            raise ValueError("this per-layer law was fitted on another family's layers; only "
                             "a law fitted on HAT subnets prices encoder-decoder shapes")
        return _hat_shape_design(shapes, task)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PerLayerLaw:
        self.coefficients = nonnegative_fit(np.asarray(X, float), np.asarray(y, float))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.coefficients is None:
            raise RuntimeError("call fit() before predict()")
        return np.asarray(X, float) @ self.coefficients

    def min_samples(self) -> int:
        return len(self.columns) + 2

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "columns": list(self.columns),
                "coefficients": None if self.coefficients is None
                else self.coefficients.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerLayerLaw:
        return cls(data["columns"], coefficients=data.get("coefficients"))


def law_from_dict(data: Mapping[str, Any]) -> LatencyLaw:
    """A law saved by :meth:`LatencyLaw.to_dict`."""
    laws: dict[str, type[LatencyLaw]] = {FewShotLaw.method: FewShotLaw,
                                          PerLayerLaw.method: PerLayerLaw}
    method = data.get("method")
    if method not in laws:
        raise ValueError(f"unknown latency law {method!r}; known: {', '.join(laws)}")
    return laws[method].from_dict(data)


def _hat_design(supernet: Supernet, configs: Sequence[Config], task: Task) -> np.ndarray:
    return _hat_shape_design([Seq2SeqShape.from_subnet(supernet.describe(c)) for c in configs],
                             task)


def _hat_shape_design(shapes: Sequence[Seq2SeqShape], task: Task) -> np.ndarray:
    """``local-cpu-model``'s terms at the task's probe workload (what was measured)."""
    from nas.hardware._local_model import probe_workload

    workloads = [probe_workload(task)] * len(shapes)
    return np.hstack([np.ones((len(shapes), 1)),
                      np.array([[s.decoder_layers] for s in shapes]),
                      encoder_design(shapes, workloads, DENSE_HAT_DECODING),
                      decoder_design(shapes, workloads, DENSE_HAT_DECODING)])


def _generic_row(supernet: Supernet, config: Config, task: Task) -> dict[str, float]:
    """Layers per kind, millions of MACs and of parameters of the dense subnet."""
    import torch

    row: dict[str, float] = {}
    for layer in supernet.describe(config).layers:
        row[f"layers.{layer.kind}"] = row.get(f"layers.{layer.kind}", 0.0) + 1.0
    model = supernet.extract(config).eval()
    with torch.inference_mode():
        row["mmacs"] = count_macs(model, task.example_inputs()) / MEGA
    row["mparams"] = count_params(model) / MEGA
    return row
