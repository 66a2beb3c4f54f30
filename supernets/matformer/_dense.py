"""The dense MatFormer decoder LM: what an extracted (Mix'n'Match) subnet runs.

A GPT-style pre-norm decoder over bytes whose blocks each have their own FFN hidden
size (``ffn_dims``, one per layer). ``MatFormerLM(**model.subnet_config())`` rebuilds an
exported subnet from its JSON alone, so this module imports only torch and the registry;
the supernet (``_model.py``) and the MoE LM reuse these layers, never the reverse.

Attention is written out (no fused kernel) with a fixed causal mask so that the model
traces to TorchScript and exports to ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas._supernet import SUBNET_BUILDERS

__all__ = ["CausalSelfAttention", "DecoderBlock", "FeedForward", "MatFormerLM"]

FAMILY = "matformer"


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (``bias``: of the
    projections; the MoE LM has none)."""

    def __init__(self, d_model: int, n_heads: int, context: int, *, bias: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.scale = (d_model // n_heads) ** -0.5
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        mask = torch.ones(context, context, dtype=torch.bool).tril()
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_heads, c // self.n_heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, T)
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        y = scores.softmax(dim=-1) @ v  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    """The block's FFN, ``fc2(gelu(fc1(x)))`` with ``hidden`` units."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block; ``ffn`` is the dense or the nested FFN."""

    def __init__(self, d_model: int, n_heads: int, context: int, ffn: nn.Module) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


def check_dims(*, vocab_size: int, d_model: int, n_heads: int, context: int) -> None:
    """Validate the sizes every MatFormer model shares (one-line ``ValueError`` s)."""
    for name, value in (("vocab_size", vocab_size), ("d_model", d_model),
                        ("n_heads", n_heads), ("context", context)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")


class LMTrunk(nn.Module):
    """Embeddings, blocks and the output head shared by the dense and nested models."""

    def __init__(
        self, *, vocab_size: int, d_model: int, n_heads: int, context: int,
        ffns: Sequence[nn.Module],
    ) -> None:
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, n_heads, context, f) for f in ffns)
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, vocab)`` of byte ids ``idx`` ``(B, T)``, T <= context."""
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"input length must be at most context={self.context}, got {t}")
        positions = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


@SUBNET_BUILDERS.register(FAMILY, description="MatFormer decoder LM (dense, per-layer FFN)")
class MatFormerLM(nn.Module):
    """A dense MatFormer subnet: a byte-level decoder LM with per-layer FFN sizes.

    Args:
        vocab_size: token ids are ``0 .. vocab_size - 1`` (256 for bytes).
        d_model: embedding width.
        n_heads: attention heads (divide ``d_model``).
        context: the longest input (learned positions).
        ffn_dims: one FFN hidden size per layer (its length is the depth).

    Raises:
        ValueError: a non-positive size, ``d_model`` not a multiple of ``n_heads`` or an
            empty ``ffn_dims``.
    """

    def __init__(
        self, *, vocab_size: int, d_model: int, n_heads: int, context: int,
        ffn_dims: Sequence[int],
    ) -> None:
        super().__init__()
        check_dims(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, context=context)
        dims = [int(d) for d in ffn_dims]
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"ffn_dims must be a non-empty list of positive sizes, got {dims}")
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.context, self.ffn_dims = context, dims
        self.trunk = LMTrunk(
            vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, context=context,
            ffns=[FeedForward(d_model, d) for d in dims],
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.trunk(idx)

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able constructor arguments: ``MatFormerLM(**subnet_config())``."""
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "context": self.context,
            "ffn_dims": list(self.ffn_dims),
        }
