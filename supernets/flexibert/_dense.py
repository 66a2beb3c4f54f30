"""The dense FlexiBERT subnet: a heterogeneous encoder built from plain kwargs.

Runs without any supernet code: ``FlexiBERTSubnet(**model.subnet_config())`` rebuilds
an exported subnet (registered in :data:`nas.SUBNET_BUILDERS` as ``flexibert``).

Layout (post-LayerNorm, as BERT): token + position embeddings and a LayerNorm at the
first layer's width; per layer ``a = LN(x + op(x))``, ``y = LN(a + ffn(a))`` where the
feed-forward stack is 1 or 3 GELU dense layers and a projection back to the hidden size;
a linear projection to the next layer's hidden size where the two differ (as the paper);
a final linear head to ``out_dim`` (the teacher's embedding size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS
from nas.supernets.flexibert._ops import make_op, op_kind

__all__ = ["FlexiBERTSubnet", "masks"]


def masks(attention_mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(bias (B, 1, 1, T), keep (B, T, 1))`` from a 0/1 ``attention_mask (B, T)``."""
    keep = attention_mask.to(dtype)
    bias = (1.0 - keep)[:, None, None, :] * torch.finfo(dtype).min
    return bias, keep[:, :, None]


class FeedForward(nn.Module):
    """``len(dims)`` GELU dense layers, then a dense projection back to ``hidden``."""

    def __init__(self, hidden: int, dims: Sequence[int]) -> None:
        super().__init__()
        widths = [hidden, *dims]
        self.stack = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], hidden)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.stack:
            x = F.gelu(layer(x))
        return self.out(x)


class EncoderLayer(nn.Module):
    """One heterogeneous encoder layer (operation, feed-forward, optional projection)."""

    def __init__(self, spec: Mapping[str, Any], next_hidden: int | None, eps: float) -> None:
        super().__init__()
        hidden = spec["hidden"]
        self.op = make_op(spec["op"], hidden, spec["heads"])
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, spec["ffn"])
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        needs = next_hidden is not None and next_hidden != hidden
        self.proj = nn.Linear(hidden, next_hidden) if needs else None

    def forward(self, x: Tensor, bias: Tensor, keep: Tensor) -> Tensor:  # (B, T, h)
        x = self.norm1(x + self.op(x, bias, keep))
        x = self.norm2(x + self.ffn(x))
        return x if self.proj is None else self.proj(x)


@SUBNET_BUILDERS.register("flexibert", description="dense heterogeneous FlexiBERT encoder")
class FlexiBERTSubnet(nn.Module):
    """A dense FlexiBERT encoder.

    Args:
        vocab_size: token ids are in ``[0, vocab_size)``.
        max_positions: the longest sequence.
        out_dim: width of the final linear head.
        layers: per layer ``{"hidden", "op", "heads", "ffn": [dims]}``.
        layer_norm_eps: epsilon of every LayerNorm.

    ``forward(input_ids (B, T), attention_mask (B, T) or None) -> (B, T, out_dim)``.

    Raises:
        ValueError: no layers, an unknown op, or a hidden size not divisible by heads.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_positions: int,
        out_dim: int,
        layers: Sequence[Mapping[str, Any]],
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers must hold at least one layer, got none")
        specs = [
            {"hidden": int(s["hidden"]), "op": str(s["op"]), "heads": int(s["heads"]),
             "ffn": [int(d) for d in s["ffn"]]}
            for s in layers
        ]
        for i, spec in enumerate(specs):
            op_kind(spec["op"])
            if spec["hidden"] % spec["heads"]:
                raise ValueError(
                    f"layers[{i}]: hidden {spec['hidden']} must divide by heads {spec['heads']}"
                )
        self._config = {
            "vocab_size": vocab_size, "max_positions": max_positions, "out_dim": out_dim,
            "layers": specs, "layer_norm_eps": layer_norm_eps,
        }
        first = specs[0]["hidden"]
        self.word = nn.Embedding(vocab_size, first)
        self.position = nn.Embedding(max_positions, first)
        self.embed_norm = nn.LayerNorm(first, eps=layer_norm_eps)
        nexts = [s["hidden"] for s in specs[1:]] + [None]
        self.layers = nn.ModuleList(
            EncoderLayer(spec, nxt, layer_norm_eps) for spec, nxt in zip(specs, nexts)
        )
        self.head = nn.Linear(specs[-1]["hidden"], out_dim)

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able kwargs: ``FlexiBERTSubnet(**subnet_config())`` rebuilds it."""
        return {**self._config, "layers": [dict(s) for s in self._config["layers"]]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bias, keep = masks(attention_mask, self.word.weight.dtype)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_norm(self.word(input_ids) + self.position(positions)[None])  # (B, T, h0)
        for layer in self.layers:
            x = layer(x, bias, keep)
        return self.head(x)  # (B, T, out_dim)
