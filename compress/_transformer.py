"""A dense, heterogeneous transformer: the model that pruning and subcloning shrink.

One class covers the transformers we compress: post-LayerNorm BERT encoders (MiniLM,
FlexiBERT's all-attention subnets) and pre-LayerNorm causal decoders (MatFormer). Every
block has its own number of heads, query/key width per head, value width per head and
FFN width; all blocks share one embedding width (the residual stream). Options say which
of the pieces around the blocks a model has:

- ``type_vocab_size``: BERT's token-type table (type 0 is added everywhere); 0 for none;
- ``embed_norm``: a LayerNorm after the embeddings (BERT); ``pre_norm``: blocks compute
  ``x + attn(LN(x))``, ``x + ffn(LN(x))`` and a final LayerNorm follows them (GPT);
  otherwise ``LN(x + attn(x))``, ``LN(a + ffn(a))`` (BERT);
- ``causal``: each position attends to itself and earlier ones only;
- ``out_dim``: a final linear head (an LM's logits, FlexiBERT's projection to the
  teacher's width); without one the model returns the last hidden states.

The arithmetic is each source's own (erf GELU, an additive ``finfo.min`` mask bias), so
a converted model (:mod:`nas.compress._convert`) computes what its source does.
``DenseTransformer(**subnet_config())`` rebuilds a model (registered in
:data:`nas.SUBNET_BUILDERS` as ``"transformer"``), so a compressed model exports with
:func:`nas.supernets._export.save_subnet` like any subnet.

Pruning the embedding width slices every LayerNorm's gamma and beta; the LayerNorm
statistics are then taken over the kept dims only, so unlike the other structures this is
not exactly "zero these weights": NViT prunes the embedding dim anyway and recovers with
distillation, as :func:`~nas.compress._prune.prune` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS

__all__ = ["FAMILY", "DenseTransformer", "Keep", "outer_norms", "param_count", "shrink",
           "shrunk_config"]

FAMILY = "transformer"
_LAYER_KEYS = ("heads", "qk_dim", "v_dim", "ffn_dim")


class TransformerBlock(nn.Module):
    """One block, post-LN (``a = LN(x + attn(x))``, ``y = LN(a + ffn(a))``) or pre-LN
    (``a = x + attn(LN(x))``, ``y = a + ffn(LN(a))``).

    ``temperature`` divides the query-key dot products; it defaults to ``sqrt(qk_dim)``
    and is kept fixed when query/key units are pruned, so removing a unit is exactly
    zeroing its weights.
    """

    def __init__(
        self, dim: int, heads: int, qk_dim: int, v_dim: int, ffn_dim: int, temperature: float,
        eps: float, pre_norm: bool,
    ) -> None:
        super().__init__()
        self.heads, self.qk_dim, self.v_dim = heads, qk_dim, v_dim
        self.temperature, self.pre_norm = temperature, pre_norm
        self.query = nn.Linear(dim, heads * qk_dim)
        self.key = nn.Linear(dim, heads * qk_dim)
        self.value = nn.Linear(dim, heads * v_dim)
        self.attn_out = nn.Linear(heads * v_dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def attend(self, x: Tensor, bias: Tensor) -> Tensor:  # x (B, T, C), bias (B|1, 1, T|1, T)
        b, t, _ = x.shape
        q = self.query(x).view(b, t, self.heads, self.qk_dim).transpose(1, 2)  # (B, h, T, dq)
        k = self.key(x).view(b, t, self.heads, self.qk_dim).transpose(1, 2)
        v = self.value(x).view(b, t, self.heads, self.v_dim).transpose(1, 2)  # (B, h, T, dv)
        scores = q @ k.transpose(-1, -2) / self.temperature + bias  # (B, h, T, T)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)  # (B, T, h*dv)
        return self.attn_out(context)

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.ffn_out(F.gelu(self.ffn_in(x)))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        if self.pre_norm:
            x = x + self.attend(self.attn_norm(x), bias)
            return x + self.feed_forward(self.ffn_norm(x))
        a = self.attn_norm(x + self.attend(x, bias))
        return self.ffn_norm(a + self.feed_forward(a))


def _positive(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@SUBNET_BUILDERS.register(FAMILY, description="dense heterogeneous transformer (compressed)")
class DenseTransformer(nn.Module):
    """A dense transformer with per-block head counts and widths.

    Args:
        vocab_size: the token embedding table's size.
        max_positions: the position embedding table's size.
        embed_dim: the hidden width shared by all blocks.
        layers: per block ``{"heads", "qk_dim", "v_dim", "ffn_dim"}`` (widths per head
            for ``qk_dim`` and ``v_dim``) and optionally ``"temperature"`` (see
            :class:`TransformerBlock`).
        type_vocab_size: rows of the token-type table (0: none).
        layer_norm_eps: epsilon of every LayerNorm.
        embed_norm: a LayerNorm after the embeddings (BERT; module doc).
        pre_norm: blocks normalise each sublayer's input and a final LayerNorm follows
            them (GPT); otherwise each sublayer's sum (BERT; module doc).
        causal: each position attends to itself and earlier ones only.
        out_dim: the width of a final linear head; without one the model returns the
            last hidden states.
        output_dim: set once the embedding width of a model without a head is pruned, so
            it still returns hidden states of the original width ``output_dim``.
        output_index: where the kept dims go in those hidden states (one position per
            embedding dim); the pruned ones read the learned constant ``out_fill``.

    ``forward(input_ids (B, T), attention_mask (B, T) or None)`` returns the last hidden
    states ``(B, T, C)``, or the head's outputs ``(B, T, out_dim)``.

    Raises:
        ValueError: no layers, a missing key, a size below 1, or an output index on a
            model with a head.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_positions: int,
        embed_dim: int,
        layers: Sequence[Mapping[str, Any]],
        type_vocab_size: int = 0,
        layer_norm_eps: float = 1e-12,
        embed_norm: bool = True,
        pre_norm: bool = False,
        causal: bool = False,
        out_dim: int | None = None,
        output_dim: int | None = None,
        output_index: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        sizes = {"vocab_size": _positive("vocab_size", vocab_size),
                 "max_positions": _positive("max_positions", max_positions),
                 "type_vocab_size": _positive("type_vocab_size", type_vocab_size, 0),
                 "embed_dim": _positive("embed_dim", embed_dim)}
        if out_dim is not None:
            _positive("out_dim", out_dim)
        if not layers:
            raise ValueError("layers must hold at least one block, got none")
        specs = [_layer_spec(i, spec) for i, spec in enumerate(layers)]
        self._config: dict[str, Any] = {
            **sizes, "layers": specs, "layer_norm_eps": float(layer_norm_eps),
            "embed_norm": bool(embed_norm), "pre_norm": bool(pre_norm), "causal": bool(causal),
            "out_dim": out_dim,
        }
        if (output_dim is None) != (output_index is None):
            raise ValueError("output_dim and output_index must be given together or not at all")
        if output_index is not None:
            if out_dim is not None:
                raise ValueError("output_index is for models without a head; this one has "
                                 f"out_dim={out_dim}")
            index = [int(i) for i in output_index]
            if (len(index) != embed_dim or len(set(index)) != embed_dim
                    or not all(0 <= i < output_dim for i in index)):
                raise ValueError(f"output_index must hold {embed_dim} distinct positions in "
                                 f"[0, {output_dim}), got {index[:8]}...")
            self._config.update(output_dim=int(output_dim), output_index=index)
            self.register_buffer("output_index", torch.tensor(index), persistent=False)
            self.out_fill = nn.Parameter(torch.zeros(output_dim))
        else:
            self.output_index = None
        eps = float(layer_norm_eps)
        self.word = nn.Embedding(vocab_size, embed_dim)
        self.position = nn.Embedding(max_positions, embed_dim)
        self.token_type = nn.Embedding(type_vocab_size, embed_dim) if type_vocab_size else None
        self.embed_norm = nn.LayerNorm(embed_dim, eps=eps) if embed_norm else None
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, s["heads"], s["qk_dim"], s["v_dim"], s["ffn_dim"],
                             s["temperature"], eps, bool(pre_norm))
            for s in specs
        )
        self.final_norm = nn.LayerNorm(embed_dim, eps=eps) if pre_norm else None
        self.head = nn.Linear(embed_dim, out_dim) if out_dim is not None else None
        if causal:
            mask = torch.ones(max_positions, max_positions, dtype=torch.bool).tril()
            self.register_buffer("causal_mask", mask, persistent=False)

    @property
    def embed_dim(self) -> int:
        return self._config["embed_dim"]

    @property
    def vocab_size(self) -> int:
        return self._config["vocab_size"]

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able kwargs: ``DenseTransformer(**subnet_config())`` rebuilds it."""
        cfg = {**self._config, "layers": [dict(s) for s in self._config["layers"]]}
        if "output_index" in cfg:
            cfg["output_index"] = list(cfg["output_index"])
        return cfg

    def _bias(self, attention_mask: Tensor | None, t: int, dtype: torch.dtype) -> Tensor:
        """Additive attention bias ``(B|1, 1, T|1, T)``: padding and, if causal, the future."""
        low = torch.finfo(dtype).min
        bias = torch.zeros(1, 1, 1, t, dtype=dtype, device=self.word.weight.device)
        if attention_mask is not None:
            bias = (1.0 - attention_mask[:, None, None, :].to(dtype)) * low
        if self._config["causal"]:
            future = ~self.causal_mask[:t, :t]  # (T, T)
            bias = bias.masked_fill(future, low)
        return bias

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        t = input_ids.shape[1]
        limit = self._config["max_positions"]
        if t > limit:
            raise ValueError(f"input_ids must hold at most {limit} tokens, got {t}")
        dtype = self.word.weight.dtype
        bias = self._bias(attention_mask, t, dtype)
        positions = torch.arange(t, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None]  # (B, T, C)
        if self.token_type is not None:
            x = x + self.token_type.weight[0]
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        for block in self.blocks:
            x = block(x, bias)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.head is not None:
            return self.head(x)
        if self.output_index is None:
            return x
        fill = self.out_fill.expand(*x.shape[:-1], -1)  # (B, T, output_dim)
        return fill.index_copy(-1, self.output_index, x)


def _layer_spec(i: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in _LAYER_KEYS if key not in spec]
    if missing:
        raise ValueError(f"layers[{i}] lacks {missing}; a block needs {list(_LAYER_KEYS)}")
    out: dict[str, Any] = {key: _positive(f"layers[{i}].{key}", spec[key])
                           for key in _LAYER_KEYS}
    out["temperature"] = float(spec.get("temperature", math.sqrt(out["qk_dim"])))
    if out["temperature"] <= 0:
        raise ValueError(f"layers[{i}].temperature must be > 0, got {out['temperature']}")
    return out


def param_count(config: Mapping[str, Any], *, which: str = "all") -> int:
    """Parameters of ``DenseTransformer(**config)`` without building it: ``all``, or the
    ``encoder`` blocks only."""
    e = config["embed_dim"]
    blocks = 0
    for s in config["layers"]:
        q, v, f = s["heads"] * s["qk_dim"], s["heads"] * s["v_dim"], s["ffn_dim"]
        blocks += 2 * (q * e + q) + (v * e + v) + (v * e + e) + (f * e + f) + (f * e + e)
        blocks += 4 * e  # two LayerNorms
    if which == "encoder":
        return blocks
    rows = config["vocab_size"] + config["max_positions"] + config.get("type_vocab_size", 0)
    total = blocks + rows * e
    total += 2 * e * (bool(config.get("embed_norm", True)) + bool(config.get("pre_norm", False)))
    if config.get("out_dim") is not None:
        total += (e + 1) * config["out_dim"]
    return total + config.get("output_dim", 0)


@dataclass(frozen=True)
class Keep:
    """The units a pruned model keeps (sorted original indices).

    ``embed``: embedding dims; per block ``heads``, ``qk`` and ``v`` (unit index within a
    head, the same for every head of the block, so the block stays a dense multi-head
    attention) and ``ffn``.
    """

    embed: tuple[int, ...]
    heads: tuple[tuple[int, ...], ...]
    qk: tuple[tuple[int, ...], ...]
    v: tuple[tuple[int, ...], ...]
    ffn: tuple[tuple[int, ...], ...]

    @classmethod
    def full(cls, model: DenseTransformer) -> Keep:
        """Every unit of ``model``."""
        blocks = model.blocks
        return cls(
            embed=tuple(range(model.embed_dim)),
            heads=tuple(tuple(range(b.heads)) for b in blocks),
            qk=tuple(tuple(range(b.qk_dim)) for b in blocks),
            v=tuple(tuple(range(b.v_dim)) for b in blocks),
            ffn=tuple(tuple(range(b.ffn_in.out_features)) for b in blocks),
        )


def _check_keep(model: DenseTransformer, keep: Keep) -> None:
    full = Keep.full(model)
    if len(keep.heads) != len(full.heads):
        raise ValueError(f"keep must describe {len(full.heads)} blocks, got {len(keep.heads)}")
    for name in ("embed", "heads", "qk", "v", "ffn"):
        kept, have = getattr(keep, name), getattr(full, name)
        pairs = [(kept, have)] if name == "embed" else list(zip(kept, have))
        for sub, allowed in pairs:
            if not sub or not set(sub) <= set(allowed) or len(set(sub)) != len(sub):
                raise ValueError(f"keep.{name} must be distinct existing units, at least one "
                                 f"per block, got {sub!r}")


def shrunk_config(model: DenseTransformer, keep: Keep) -> dict[str, Any]:
    """The config of ``shrink(model, keep)``, without copying any weight (cheap enough to
    call inside a search over how much to remove)."""
    cfg = model.subnet_config()
    cfg["embed_dim"] = len(keep.embed)
    for spec, heads, qk, v, ffn in zip(cfg["layers"], keep.heads, keep.qk, keep.v, keep.ffn):
        spec.update(heads=len(heads), qk_dim=len(qk), v_dim=len(v), ffn_dim=len(ffn))
    if "output_index" in cfg:  # already pruned: keep the original output width
        cfg["output_index"] = [cfg["output_index"][i] for i in keep.embed]
    elif cfg["out_dim"] is None and len(keep.embed) < model.embed_dim:
        cfg.update(output_dim=model.embed_dim, output_index=list(keep.embed))
    return cfg


def _rows(heads: Sequence[int], units: Sequence[int], width: int) -> Tensor:
    """Flat indices of ``units`` within each of ``heads`` (head-major, width per head)."""
    return torch.tensor([h * width + u for h in heads for u in units], dtype=torch.long)


def outer_norms(model: DenseTransformer) -> list[str]:
    """Every LayerNorm outside the blocks' own (embedding, final)."""
    return [n for n in ("embed_norm", "final_norm") if getattr(model, n) is not None]


def shrink(model: DenseTransformer, keep: Keep) -> DenseTransformer:
    """A physically smaller copy of ``model`` holding only the units in ``keep``.

    Raises:
        ValueError: ``keep`` empties a dimension or names a unit the model lacks.
    """
    _check_keep(model, keep)
    cfg = shrunk_config(model, keep)
    e = torch.tensor(keep.embed, dtype=torch.long)
    state = model.state_dict()
    new: dict[str, Tensor] = {}
    if "out_fill" in state:
        new["out_fill"] = state["out_fill"]
    elif "output_index" in cfg:  # the last LayerNorm's beta: a pruned dim's mean output
        new["out_fill"] = state[f"blocks.{len(model.blocks) - 1}.ffn_norm.bias"].clone()
    tables = ["word", "position"] + (["token_type"] if model.token_type is not None else [])
    for name in tables:
        new[f"{name}.weight"] = state[f"{name}.weight"][:, e]
    for norm in outer_norms(model):
        for part in ("weight", "bias"):
            new[f"{norm}.{part}"] = state[f"{norm}.{part}"][e]
    if model.head is not None:
        new["head.weight"] = state["head.weight"][:, e]
        new["head.bias"] = state["head.bias"]
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        qk_rows = _rows(keep.heads[i], keep.qk[i], block.qk_dim)
        v_rows = _rows(keep.heads[i], keep.v[i], block.v_dim)
        f = torch.tensor(keep.ffn[i], dtype=torch.long)
        for name, rows in (("query", qk_rows), ("key", qk_rows), ("value", v_rows),
                           ("ffn_in", f)):
            new[p + f"{name}.weight"] = state[p + f"{name}.weight"][rows][:, e]
            new[p + f"{name}.bias"] = state[p + f"{name}.bias"][rows]
        for name, cols in (("attn_out", v_rows), ("ffn_out", f)):
            new[p + f"{name}.weight"] = state[p + f"{name}.weight"][e][:, cols]
            new[p + f"{name}.bias"] = state[p + f"{name}.bias"][e]
        for norm in ("attn_norm", "ffn_norm"):
            for part in ("weight", "bias"):
                new[p + f"{norm}.{part}"] = state[p + f"{norm}.{part}"][e]
    small = DenseTransformer(**cfg)
    small.load_state_dict({k: v.clone() for k, v in new.items()}, strict=True)
    return small.train(model.training)
