"""MatFormer (Devvrit, Kudugunta et al., 2023, "MatFormer: Nested Transformer for
Elastic Inference"): a decoder LM whose every FFN nests its granularities.

Each block's FFN has ``d_ff`` hidden units; granularity ``g`` uses the *first*
``d_ff * fraction(g)`` of them (rows of ``fc1``, columns of ``fc2``), with the paper's
four granularities S, M, L, XL at 1/8, 1/4, 1/2 and 1 of ``d_ff`` (FFN ratios 0.5, 1, 2
and 4 of ``d_model`` when ``d_ff = 4 d_model``). Attention, embeddings and norms are
shared whole. Training (:class:`MatFormerJoint`) sums the losses of the four uniform
granularities on the same batch. Mix'n'Match picks a granularity per layer, which is
exactly the search space here: one gene ``layer.{i}.ffn_dim`` per layer (no elastic
depth: MatFormer nests widths only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._space import Config, Gene, SearchSpace
from nas._supernet import LayerShape, QuantUnit, SubnetShape, Supernet
from nas.supernets.matformer._dense import FAMILY, LMTrunk, MatFormerLM, check_dims
from nas.supernets.training._schemes import TrainingScheme, WeightedConfigs

__all__ = [
    "GRANULARITIES",
    "MatFormerJoint",
    "MatFormerSupernet",
    "NestedFeedForward",
    "matformer_space",
]

GRANULARITIES: dict[str, float] = {"S": 1 / 8, "M": 1 / 4, "L": 1 / 2, "XL": 1.0}
"""The paper's nested FFN granularities as fractions of the full hidden size ``d_ff``."""


def granularity_width(d_ff: int, granularity: str) -> int:
    """Hidden units of ``granularity`` in an FFN of ``d_ff`` units."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}"
        )
    return int(d_ff * GRANULARITIES[granularity])


def matformer_space(*, n_layers: int, d_ff: int) -> SearchSpace:
    """Mix'n'Match: one numeric gene ``layer.{i}.ffn_dim`` per layer, its choices the
    four granularities' widths (``4 ** n_layers`` subnets).

    Raises:
        ValueError: ``n_layers`` < 1 or a ``d_ff`` not divisible by 8.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if isinstance(d_ff, bool) or not isinstance(d_ff, int) or d_ff < 8 or d_ff % 8:
        raise ValueError(f"d_ff must be a positive multiple of 8 (S is d_ff/8), got {d_ff!r}")
    widths = tuple(granularity_width(d_ff, g) for g in GRANULARITIES)
    genes = [Gene(f"layer.{i}.ffn_dim", widths) for i in range(n_layers)]
    return SearchSpace(f"matformer-L{n_layers}-ff{d_ff}", genes)


class NestedFeedForward(nn.Module):
    """An FFN of ``d_ff`` units that runs its first ``width`` units only (MatFormer's
    nested FFN: ``fc2[:, :w] @ gelu(fc1[:w] x + b1[:w]) + b2``)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.width = d_ff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width
        hidden = F.gelu(F.linear(x, self.fc1.weight[:w], self.fc1.bias[:w]))  # (B, T, w)
        return F.linear(hidden, self.fc2.weight[:, :w], self.fc2.bias)


class MatFormerSupernet(Supernet):
    """The MatFormer decoder LM as a weight-sharing supernet.

    Args:
        vocab_size: token ids are ``0 .. vocab_size - 1`` (256: bytes).
        d_model: embedding width.
        n_layers: decoder blocks.
        n_heads: attention heads.
        d_ff: the full (XL) FFN hidden size, a multiple of 8.
        context: the longest input.

    Raises:
        ValueError: an invalid size (the message names it).
    """

    family = FAMILY

    def __init__(
        self, *, vocab_size: int = 256, d_model: int = 128, n_layers: int = 4,
        n_heads: int = 4, d_ff: int = 512, context: int = 128,
    ) -> None:
        super().__init__()
        check_dims(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, context=context)
        self.space = matformer_space(n_layers=n_layers, d_ff=d_ff)
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.n_heads, self.d_ff, self.context = n_heads, d_ff, context
        self.trunk = LMTrunk(
            vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, context=context,
            ffns=[NestedFeedForward(d_model, d_ff) for _ in range(n_layers)],
        )
        self.activate(self.space.largest())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, vocab)`` of the active subnet."""
        return self.trunk(idx)

    def uniform(self, granularity: str) -> Config:
        """The config with every layer at ``granularity`` ("S", "M", "L" or "XL")."""
        width = granularity_width(self.d_ff, granularity)
        return self.space.config({name: width for name in self.space.names})

    def mix(self, granularities: Sequence[str]) -> Config:
        """A Mix'n'Match config: layer ``i`` at ``granularities[i]``.

        Raises:
            ValueError: not one granularity per layer, or an unknown one.
        """
        if len(granularities) != self.n_layers:
            raise ValueError(
                f"mix needs one granularity per layer ({self.n_layers}), "
                f"got {len(granularities)}"
            )
        return self.space.config({
            name: granularity_width(self.d_ff, g)
            for name, g in zip(self.space.names, granularities, strict=True)
        })

    def _widths(self, config: Config) -> list[int]:
        return [int(config[name]) for name in self.space.names]

    def _activate(self, config: Config) -> None:
        for block, width in zip(self.trunk.blocks, self._widths(config), strict=True):
            block.ffn.width = width

    def _extract(self, config: Config) -> nn.Module:
        widths = self._widths(config)
        dense = MatFormerLM(
            vocab_size=self.vocab_size, d_model=self.d_model, n_heads=self.n_heads,
            context=self.context, ffn_dims=widths,
        )
        state = {}
        for key, tensor in self.trunk.state_dict().items():
            state[f"trunk.{key}"] = _slice(key, tensor, widths)
        dense.load_state_dict(state)
        return dense.eval()

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Per block its attention (q/k/v and output projections) and its FFN."""
        return tuple(QuantUnit(f"block.{i}.{part}") for i in range(self.n_layers)
                     for part in ("attn", "ffn"))

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {f"block.{i}.{part}": (f"trunk.blocks.{i}.{part}",)
                for i in range(self.n_layers) for part in ("attn", "ffn")}

    def _describe(self, config: Config) -> SubnetShape:
        layers = tuple(
            LayerShape("decoder", {"embed_dim": self.d_model, "ffn_dim": width,
                                   "heads": self.n_heads})
            for width in self._widths(config)
        )
        return SubnetShape(
            family=FAMILY,
            layers=layers,
            dims={"vocab_size": self.vocab_size, "embed_dim": self.d_model,
                  "context": self.context},
        )

    def _architecture(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_ff": self.d_ff,
            "context": self.context,
        }

    @classmethod
    def from_architecture(cls, architecture: Mapping[str, Any]) -> MatFormerSupernet:
        """Rebuild an (untrained) supernet from :meth:`architecture`'s dict."""
        return cls(**dict(architecture))


def _slice(key: str, tensor: torch.Tensor, widths: Sequence[int]) -> torch.Tensor:
    """The dense copy of one trunk tensor: FFN tensors cut to the layer's width."""
    parts = key.split(".")
    if parts[0] != "blocks" or parts[2] != "ffn":
        return tensor.detach().clone()
    width = widths[int(parts[1])]
    layer, name = parts[3], parts[4]
    if layer == "fc1":  # weight (d_ff, C), bias (d_ff,)
        return tensor[:width].detach().clone()
    if name == "weight":  # fc2 weight (C, d_ff)
        return tensor[:, :width].detach().clone()
    return tensor.detach().clone()  # fc2 bias (C,)


class MatFormerJoint(TrainingScheme):
    """MatFormer's joint training: every step trains each of ``granularities`` (uniform
    across layers) on the same batch, and the loss is the weighted *sum* of theirs.

    The paper's objective is ``sum_i lambda_i L(M_i(x), y)`` over the g = 4 nested
    granularities with equal weights (``lambda_i = 1``). With only ``("XL",)`` this is
    standard training of the full model (the paper's baseline, whose slices are what
    MatFormer's granularities are compared with).

    Args:
        granularities: the granularities trained every step, from S, M, L, XL.
        weights: one positive loss weight per granularity; 1.0 each when omitted.

    Raises:
        ValueError: an empty, repeated or unknown granularity, or weights that are not
            one positive number per granularity.
    """

    name = "matformer-joint"

    def __init__(
        self, granularities: Sequence[str] = tuple(GRANULARITIES),
        weights: Sequence[float] | None = None,
    ) -> None:
        granularities = tuple(granularities)
        unknown = [g for g in granularities if g not in GRANULARITIES]
        if not granularities or unknown or len(set(granularities)) != len(granularities):
            raise ValueError(
                f"granularities must be distinct values from {list(GRANULARITIES)}, "
                f"got {list(granularities)}"
            )
        weights = tuple(1.0 for _ in granularities) if weights is None else tuple(weights)
        if len(weights) != len(granularities) or not all(w > 0 for w in weights):
            raise ValueError(
                f"weights must be {len(granularities)} positive numbers (one per "
                f"granularity), got {list(weights)}"
            )
        self.granularities, self.weights = granularities, weights

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        if not isinstance(supernet, MatFormerSupernet):
            raise TypeError(
                f"the {self.name} scheme trains a MatFormerSupernet, got "
                f"{type(supernet).__name__}"
            )
        return [(supernet.uniform(g), w)
                for g, w in zip(self.granularities, self.weights, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "granularities": list(self.granularities),
                "fractions": [GRANULARITIES[g] for g in self.granularities],
                "weights": list(self.weights), "combine": "sum"}
