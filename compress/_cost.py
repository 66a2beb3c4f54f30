"""What a pruning target measures: parameters, MACs or latency, from a model's config.

Every cost is a function of :meth:`DenseTransformer.subnet_config` alone, so pruning can
ask "what would the model cost without these structures" (:func:`shrunk_config`) without
building it, and NViT's latency-aware term can ask what removing one unit saves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nas.compress._latency import TransformerLatencyModel, transformer_macs
from nas.compress._transformer import DenseTransformer, param_count

__all__ = ["ENCODER_PARAMS", "PARAMS", "Cost", "latency_cost", "macs_cost"]

Config = Mapping[str, Any]


@dataclass(frozen=True)
class Cost:
    """A named cost of a :class:`DenseTransformer` config; never raised by removing a
    unit (pruning's search over how much to remove relies on that)."""

    name: str
    unit: str
    of_config: Callable[[Config], float]

    def __call__(self, model: DenseTransformer) -> float:
        return float(self.of_config(model.subnet_config()))

    def format(self, value: float) -> str:
        """``value`` with its unit, e.g. ``12.3 ms`` or ``11,264,896 params``."""
        if self.unit == "ms":
            return f"{value:.2f} ms"
        return f"{value:,.0f} {self.unit}"


PARAMS = Cost("params", "params", param_count)
"""Every parameter of the model, embeddings and head included."""
ENCODER_PARAMS = Cost("encoder params", "params",
                      lambda config: param_count(config, which="encoder"))
"""The parameters of the transformer blocks only (what pruning the encoder changes)."""


def macs_cost(tokens: int) -> Cost:
    """Multiply-accumulates of one forward pass on a sequence of ``tokens`` tokens."""
    return Cost(f"MACs at {tokens} tokens", "MACs",
                lambda config: transformer_macs(config, tokens))


def latency_cost(model: TransformerLatencyModel) -> Cost:
    """Latency predicted by a calibrated
    :class:`~nas.compress._latency.TransformerLatencyModel`, ms."""
    return Cost("latency", "ms", model.predict_ms)
