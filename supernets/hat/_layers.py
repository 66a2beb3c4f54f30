"""Elastic ("super") layers of HAT's SuperTransformer.

Every elastic op keeps one weight at the largest size and runs a subnet on its leading
slice (``weight[:out, :in]``) through ``F.linear``/``F.embedding``/``F.layer_norm``, as
HAT's ``LinearSuper``, ``EmbeddingSuper`` and ``LayerNormSuper`` do. Slices are views, so
a training step's gradients land in the shared super weight, only in the rows and
columns the sampled subnet used: that is what makes weight sharing work.

The sizes of the running subnet are passed in explicitly (the supernet holds them), and
``export`` methods hand back cloned, contiguous slices named as the dense layers of
:mod:`nas.supernets.hat._dense` name them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.supernets.hat._dense import merge_heads, split_heads

State = dict[str, Tensor]


@dataclass(frozen=True)
class EncoderLayerSizes:
    """One active encoder layer: FFN hidden dim, heads and q/k/v width."""

    ffn_dim: int
    heads: int
    width: int


@dataclass(frozen=True)
class DecoderLayerSizes:
    """One active decoder layer, with its encoder-decoder attention sizes."""

    ffn_dim: int
    heads: int
    width: int
    ende_heads: int
    ende_width: int
    ende_layers: int


def _copy(t: Tensor) -> Tensor:
    return t.detach().clone().contiguous()


class SuperLinear(nn.Module):
    """A Linear whose subnets use the leading ``out`` rows and ``in`` columns."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, out_features: int) -> Tensor:  # x (..., in)
        return F.linear(x, self.weight[:out_features, : x.shape[-1]], self.bias[:out_features])

    def export(self, out_features: int, in_features: int) -> State:
        return {
            "weight": _copy(self.weight[:out_features, :in_features]),
            "bias": _copy(self.bias[:out_features]),
        }


class SuperLayerNorm(nn.LayerNorm):
    """A LayerNorm over the leading ``d`` features, ``d`` read from the input."""

    def forward(self, x: Tensor) -> Tensor:  # x (..., d)
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    def export(self, dim: int) -> State:
        return {"weight": _copy(self.weight[:dim]), "bias": _copy(self.bias[:dim])}


class SuperEmbedding(nn.Module):
    """A token table whose subnets read the leading ``dim`` columns.

    Initialised as HAT's: normal with std ``dim_max ** -0.5``, the pad row zero.
    """

    def __init__(self, vocab: int, dim: int, pad_index: int) -> None:
        super().__init__()
        self.pad_index = pad_index
        self.weight = nn.Parameter(torch.empty(vocab, dim))
        nn.init.normal_(self.weight, mean=0.0, std=dim**-0.5)
        with torch.no_grad():
            self.weight[pad_index].zero_()

    def table(self, dim: int) -> Tensor:
        return self.weight[:, :dim]  # (V, dim)

    def forward(self, tokens: Tensor, dim: int) -> Tensor:  # tokens (B, T)
        return F.embedding(tokens, self.table(dim), self.pad_index)  # (B, T, dim)


def _xavier_fused(*linears: SuperLinear) -> None:
    """Initialise q/k/v (or k/v) weights as one fused in-projection, as HAT's
    ``in_proj_weight`` is when their input dims agree."""
    if len({lin.weight.shape[1] for lin in linears}) != 1:
        return  # separate projections (HAT's q/k/v_proj_weight): each keeps its own init
    fused = torch.empty(sum(lin.weight.shape[0] for lin in linears), linears[0].weight.shape[1])
    nn.init.xavier_uniform_(fused)
    with torch.no_grad():
        for lin, part in zip(linears, fused.split([lin.weight.shape[0] for lin in linears])):
            lin.weight.copy_(part)


class SuperAttention(nn.Module):
    """Multi-head attention with elastic query/memory dims, head count and q/k/v width.

    The first ``width`` rows of q, k and v are used; head ``j`` reads columns
    ``[j * width / heads, (j + 1) * width / heads)``.
    """

    def __init__(self, dim: int, memory_dim: int, width: int, *, attention_dropout: float) -> None:
        super().__init__()
        self.attention_dropout = attention_dropout
        self.q_proj = SuperLinear(dim, width)
        self.k_proj = SuperLinear(memory_dim, width)
        self.v_proj = SuperLinear(memory_dim, width)
        self.out_proj = SuperLinear(width, dim)
        _xavier_fused(self.q_proj, self.k_proj, self.v_proj)

    def kv(self, memory: Tensor, heads: int, width: int) -> tuple[Tensor, Tensor]:
        """Keys and values (B, h, S, hd) of memory (B, S, M)."""
        k = split_heads(self.k_proj(memory, width), heads)
        v = split_heads(self.v_proj(memory, width), heads)
        return k, v

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, heads: int, width: int, *,
        mask: Tensor | None = None, causal: bool = False,
    ) -> Tensor:
        q = split_heads(self.q_proj(x, width), heads)  # (B, h, T, hd)
        p = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p)
        return self.out_proj(merge_heads(y), x.shape[-1])  # (B, T, C)

    def export_self(self, dim: int, width: int) -> State:
        """Dense self-attention: q/k/v fused into one ``qkv`` projection."""
        q, k, v = (p.export(width, dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        return {
            "qkv.weight": torch.cat([q["weight"], k["weight"], v["weight"]]),
            "qkv.bias": torch.cat([q["bias"], k["bias"], v["bias"]]),
            **_prefixed("out.", self.out_proj.export(dim, width)),
        }

    def export_cross(self, dim: int, memory_dim: int, width: int) -> State:
        """Dense encoder-decoder attention: ``q`` and a fused ``kv`` projection."""
        k, v = (p.export(width, memory_dim) for p in (self.k_proj, self.v_proj))
        return {
            **_prefixed("q.", self.q_proj.export(width, dim)),
            "kv.weight": torch.cat([k["weight"], v["weight"]]),
            "kv.bias": torch.cat([k["bias"], v["bias"]]),
            **_prefixed("out.", self.out_proj.export(dim, width)),
        }


def _prefixed(prefix: str, state: State) -> State:
    return {prefix + name: t for name, t in state.items()}


class _SuperFFN(nn.Module):
    """ReLU FFN with an elastic hidden dim."""

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.fc1 = SuperLinear(dim, ffn_dim)
        self.fc2 = SuperLinear(ffn_dim, dim)

    def ffn(self, x: Tensor, ffn_dim: int) -> Tensor:  # x (B, T, C)
        return self.fc2(F.relu(self.fc1(x, ffn_dim)), x.shape[-1])

    def export_ffn(self, dim: int, ffn_dim: int) -> State:
        return {
            **_prefixed("fc1.", self.fc1.export(ffn_dim, dim)),
            **_prefixed("fc2.", self.fc2.export(dim, ffn_dim)),
        }


class SuperEncoderLayer(_SuperFFN):
    """HAT's post-norm encoder layer at super size."""

    def __init__(self, dim: int, ffn_dim: int, width: int, *, attention_dropout: float) -> None:
        super().__init__(dim, ffn_dim)
        self.attn = SuperAttention(dim, dim, width, attention_dropout=attention_dropout)
        self.attn_norm = SuperLayerNorm(dim)
        self.ffn_norm = SuperLayerNorm(dim)

    def forward(
        self, x: Tensor, sizes: EncoderLayerSizes, mask: Tensor | None, dropout: float
    ) -> Tensor:  # x (B, S, E)
        k, v = self.attn.kv(x, sizes.heads, sizes.width)
        y = self.attn(x, k, v, sizes.heads, sizes.width, mask=mask)
        x = self.attn_norm(x + F.dropout(y, dropout, self.training))
        y = self.ffn(x, sizes.ffn_dim)
        return self.ffn_norm(x + F.dropout(y, dropout, self.training))

    def export(self, dim: int, sizes: EncoderLayerSizes) -> State:
        return {
            **_prefixed("attn.", self.attn.export_self(dim, sizes.width)),
            **_prefixed("attn_norm.", self.attn_norm.export(dim)),
            **self.export_ffn(dim, sizes.ffn_dim),
            **_prefixed("ffn_norm.", self.ffn_norm.export(dim)),
        }


class SuperDecoderLayer(_SuperFFN):
    """HAT's post-norm decoder layer at super size."""

    def __init__(
        self, dim: int, encoder_dim: int, ffn_dim: int, width: int, ende_width: int, *,
        attention_dropout: float,
    ) -> None:
        super().__init__(dim, ffn_dim)
        self.self_attn = SuperAttention(dim, dim, width, attention_dropout=attention_dropout)
        self.self_attn_norm = SuperLayerNorm(dim)
        self.ende_attn = SuperAttention(
            dim, encoder_dim, ende_width, attention_dropout=attention_dropout
        )
        self.ende_attn_norm = SuperLayerNorm(dim)
        self.ffn_norm = SuperLayerNorm(dim)

    def _rest(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
        sizes: DecoderLayerSizes, dropout: float,
    ) -> Tensor:
        y = self.ende_attn(x, k, v, sizes.ende_heads, sizes.ende_width, mask=mask)
        x = self.ende_attn_norm(x + F.dropout(y, dropout, self.training))
        y = self.ffn(x, sizes.ffn_dim)
        return self.ffn_norm(x + F.dropout(y, dropout, self.training))

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
        sizes: DecoderLayerSizes, dropout: float,
    ) -> Tensor:  # x (B, T, D); k, v (B, h, k * S, hd)
        self_k, self_v = self.self_attn.kv(x, sizes.heads, sizes.width)
        y = self.self_attn(x, self_k, self_v, sizes.heads, sizes.width, causal=True)
        x = self.self_attn_norm(x + F.dropout(y, dropout, self.training))
        return self._rest(x, k, v, mask, sizes, dropout)

    def step(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None, k: Tensor, v: Tensor,
        mask: Tensor | None, sizes: DecoderLayerSizes, dropout: float,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One new target position x (B, 1, D) with the past keys/values in ``cache``."""
        self_k, self_v = self.self_attn.kv(x, sizes.heads, sizes.width)  # (B, h, 1, hd)
        if cache is not None:
            self_k = torch.cat([cache[0], self_k], dim=2)
            self_v = torch.cat([cache[1], self_v], dim=2)
        y = self.self_attn(x, self_k, self_v, sizes.heads, sizes.width)
        x = self.self_attn_norm(x + F.dropout(y, dropout, self.training))
        return self._rest(x, k, v, mask, sizes, dropout), (self_k, self_v)

    def export(self, dim: int, encoder_dim: int, sizes: DecoderLayerSizes) -> State:
        return {
            **_prefixed("self_attn.", self.self_attn.export_self(dim, sizes.width)),
            **_prefixed("self_attn_norm.", self.self_attn_norm.export(dim)),
            **_prefixed(
                "ende_attn.", self.ende_attn.export_cross(dim, encoder_dim, sizes.ende_width)
            ),
            **_prefixed("ende_attn_norm.", self.ende_attn_norm.export(dim)),
            **self.export_ffn(dim, sizes.ffn_dim),
            **_prefixed("ffn_norm.", self.ffn_norm.export(dim)),
        }
