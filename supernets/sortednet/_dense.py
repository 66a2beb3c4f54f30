"""Dense SortedNet sub-models: a plain MLP and a plain transformer encoder.

What :meth:`SortedMLP.extract` and :meth:`SortedTransformer.extract` return, and what
``nas.load_subnet`` rebuilds from an export's ``config.json`` alone: each class is built
from plain keyword arguments and returns them from ``subnet_config()``. Nothing here
imports the supernet code, so an exported sub-model runs without it. The layers follow
the supernets' layout one to one (same parameter names, sliced sizes), which is what
makes extraction a copy of weight prefixes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS

__all__ = ["DenseSortedMLP", "DenseSortedTransformer", "HEADS", "check_positive"]

MLP_FAMILY = "sortednet"
TRANSFORMER_FAMILY = "sortednet-transformer"
HEADS = ("classify", "lm")
"""Output heads of the transformer: mean-pooled classification or per-token logits."""


def check_positive(**values: Any) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


@SUBNET_BUILDERS.register(MLP_FAMILY, description="dense sub-model of a sorted MLP")
class DenseSortedMLP(nn.Module):
    """``depth`` hidden ReLU layers of ``width`` units each, then a linear classifier.

    Args:
        in_features: input size (64 for the digits).
        width: units of every hidden layer.
        depth: hidden layers.
        num_classes: outputs.
    """

    def __init__(self, *, in_features: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        check_positive(in_features=in_features, width=width, depth=depth, num_classes=num_classes)
        self.in_features, self.width = in_features, width
        self.depth, self.num_classes = depth, num_classes
        self.hidden = nn.ModuleList(
            nn.Linear(in_features if i == 0 else width, width) for i in range(depth)
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:  # (B, width)
            x = F.relu(layer(x))
        return self.head(x)  # (B, num_classes)

    def subnet_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "width": self.width, "depth": self.depth,
                "num_classes": self.num_classes}


class DenseEncoderLayer(nn.Module):
    """Pre-LN encoder layer: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

    def __init__(self, embed_dim: int, heads: int, head_dim: int, ffn_dim: int,
                 *, causal: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        inner = heads * head_dim
        self.ln1 = nn.LayerNorm(embed_dim)
        self.q = nn.Linear(embed_dim, inner)
        self.k = nn.Linear(embed_dim, inner)
        self.v = nn.Linear(embed_dim, inner)
        self.out = nn.Linear(inner, embed_dim)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        context = attention(self.q(h), self.k(h), self.v(h), heads=self.heads,
                            head_dim=self.head_dim, causal=self.causal)
        x = x + self.out(context)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def attention(q: Tensor, k: Tensor, v: Tensor, *, heads: int, head_dim: int,
              causal: bool) -> Tensor:
    """Multi-head scaled dot-product attention on ``(B, T, heads * head_dim)`` inputs.

    The sizes are Python integers, not read off the tensors, so that a traced or
    ONNX-exported model keeps them as constants.
    """
    batch, length = q.shape[0], q.shape[1]
    inner = heads * head_dim

    def split(t: Tensor) -> Tensor:  # (B, heads, T, head_dim)
        return t.reshape(batch, length, heads, head_dim).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-2, -1) * head_dim**-0.5  # (B, heads, T, T)
    if causal:
        mask = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    context = scores.softmax(-1) @ split(v)  # (B, heads, T, head_dim)
    return context.transpose(1, 2).reshape(batch, length, inner)


@SUBNET_BUILDERS.register(
    TRANSFORMER_FAMILY, description="dense sub-model of a sorted transformer encoder"
)
class DenseSortedTransformer(nn.Module):
    """A pre-LN transformer encoder with a classification or language-model head.

    Inputs are token ids ``(B, T)`` when ``vocab_size`` is given, else feature vectors
    ``(B, T, input_dim)``. ``head="classify"`` mean-pools the tokens into
    ``(B, num_classes)``; ``head="lm"`` gives per-token ``(B, T, num_classes)`` logits
    (use ``causal=True`` for a left-to-right LM).

    Args:
        embed_dim: model width (not elastic in SortedNet's transformer space).
        heads, head_dim: attention heads of every layer and their size.
        ffn_dim: FFN units of every layer.
        depth: encoder layers.
        max_len: longest sequence (learned positions).
        num_classes: outputs (the vocabulary size for an LM).
        vocab_size, input_dim: exactly one of them: token ids or feature inputs.
        head: ``"classify"`` or ``"lm"``.
        causal: mask attention to earlier positions.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        heads: int,
        head_dim: int,
        ffn_dim: int,
        depth: int,
        max_len: int,
        num_classes: int,
        vocab_size: int | None = None,
        input_dim: int | None = None,
        head: str = "classify",
        causal: bool = False,
    ) -> None:
        super().__init__()
        check_transformer_args(embed_dim=embed_dim, heads=heads, head_dim=head_dim,
                               ffn_dim=ffn_dim, depth=depth, max_len=max_len,
                               num_classes=num_classes, vocab_size=vocab_size,
                               input_dim=input_dim, head=head)
        self._config = {"embed_dim": embed_dim, "heads": heads, "head_dim": head_dim,
                        "ffn_dim": ffn_dim, "depth": depth, "max_len": max_len,
                        "num_classes": num_classes, "vocab_size": vocab_size,
                        "input_dim": input_dim, "head": head, "causal": causal}
        self.head_kind = head
        self.embed = (nn.Embedding(vocab_size, embed_dim) if vocab_size is not None
                      else nn.Linear(input_dim, embed_dim))
        self.pos = nn.Parameter(0.02 * torch.randn(max_len, embed_dim))
        self.layers = nn.ModuleList(
            DenseEncoderLayer(embed_dim, heads, head_dim, ffn_dim, causal=causal)
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # (B, T, C)
        h = h + self.pos[: h.shape[1]]
        for layer in self.layers:
            h = layer(h)
        h = self.ln_f(h)
        if self.head_kind == "classify":
            h = h.mean(1)  # (B, C)
        return self.head(h)

    def subnet_config(self) -> dict[str, Any]:
        return dict(self._config)


def check_transformer_args(
    *,
    embed_dim: int,
    heads: int,
    head_dim: int,
    ffn_dim: int,
    depth: int,
    max_len: int,
    num_classes: int,
    vocab_size: int | None,
    input_dim: int | None,
    head: str,
) -> None:
    """Validate the transformer's constructor arguments (shared by dense and supernet)."""
    check_positive(embed_dim=embed_dim, heads=heads, head_dim=head_dim, ffn_dim=ffn_dim,
                   depth=depth, max_len=max_len, num_classes=num_classes)
    if (vocab_size is None) == (input_dim is None):
        raise ValueError(
            f"give exactly one of vocab_size (token ids) or input_dim (feature inputs), "
            f"got vocab_size={vocab_size!r}, input_dim={input_dim!r}"
        )
    check_positive(**({"vocab_size": vocab_size} if vocab_size is not None
                      else {"input_dim": input_dim}))
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
