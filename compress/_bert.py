"""A dense, heterogeneous BERT encoder: the model that structural pruning shrinks.

Post-LayerNorm BERT exactly as :mod:`nas.supernets._minilm` computes it (erf GELU, an
additive ``finfo.min`` attention-mask bias, token type 0 added to every position), but
every block has its own number of heads, query/key width per head, value width per head
and FFN width, and all blocks share one embedding width. ``BertEncoder(**subnet_config())``
rebuilds it (registered in :data:`nas.SUBNET_BUILDERS` as ``"bert"``), so a pruned model
exports with :func:`nas.supernets._export.save_subnet` like any subnet.

Pruning the embedding width keeps every LayerNorm consistent by slicing its gamma and
beta; the LayerNorm statistics (mean, variance) are then taken over the kept dims only, so
unlike the other structures this is not an exact "zero these weights" operation: NViT
prunes the embedding dim anyway and recovers with distillation, as :func:`prune` does.
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

__all__ = ["FAMILY", "BertEncoder", "Keep", "bert_from_minilm", "shrink"]

FAMILY = "bert"
_LAYER_KEYS = ("heads", "qk_dim", "v_dim", "ffn_dim")


class BertBlock(nn.Module):
    """One post-LN block: ``a = LN(x + attn(x))``, ``y = LN(a + ffn(a))``.

    ``temperature`` divides the query-key dot products; it defaults to ``sqrt(qk_dim)``
    (BERT's) and is kept fixed when query/key units are pruned, so removing a unit is
    exactly zeroing its weights.
    """

    def __init__(
        self, dim: int, heads: int, qk_dim: int, v_dim: int, ffn_dim: int, temperature: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.heads, self.qk_dim, self.v_dim = heads, qk_dim, v_dim
        self.temperature = temperature
        self.query = nn.Linear(dim, heads * qk_dim)
        self.key = nn.Linear(dim, heads * qk_dim)
        self.value = nn.Linear(dim, heads * v_dim)
        self.attn_out = nn.Linear(heads * v_dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:  # x (B, T, C), bias (B, 1, 1, T)
        b, t, _ = x.shape
        q = self.query(x).view(b, t, self.heads, self.qk_dim).transpose(1, 2)  # (B, h, T, dq)
        k = self.key(x).view(b, t, self.heads, self.qk_dim).transpose(1, 2)
        v = self.value(x).view(b, t, self.heads, self.v_dim).transpose(1, 2)  # (B, h, T, dv)
        scores = q @ k.transpose(-1, -2) / self.temperature + bias  # (B, h, T, T)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)  # (B, T, h*dv)
        a = self.attn_norm(x + self.attn_out(context))
        return self.ffn_norm(a + self.ffn_out(F.gelu(self.ffn_in(a))))


@SUBNET_BUILDERS.register(FAMILY, description="dense heterogeneous BERT encoder (pruned)")
class BertEncoder(nn.Module):
    """A dense BERT encoder with per-block head counts and widths.

    Args:
        vocab_size, max_positions, type_vocab_size: embedding table sizes.
        embed_dim: the hidden width shared by all blocks.
        layers: per block ``{"heads", "qk_dim", "v_dim", "ffn_dim"}`` (widths per head
            for ``qk_dim`` and ``v_dim``) and optionally ``"temperature"`` (see
            :class:`BertBlock`).
        layer_norm_eps: epsilon of every LayerNorm.
        output_dim, output_index: set once the embedding width is pruned, so the model
            still returns hidden states of the original width ``output_dim``: the kept
            dims go to ``output_index`` (one position per embedding dim), the pruned ones
            read the learned constant ``out_fill`` (initialised to the last LayerNorm's
            beta there, the pruned dim's mean output).

    ``forward(input_ids (B, T), attention_mask (B, T)) -> last hidden states (B, T, C)``.

    Raises:
        ValueError: no layers, a missing key, or a size below 1.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_positions: int,
        type_vocab_size: int,
        embed_dim: int,
        layers: Sequence[Mapping[str, Any]],
        layer_norm_eps: float = 1e-12,
        output_dim: int | None = None,
        output_index: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        sizes = {"vocab_size": vocab_size, "max_positions": max_positions,
                 "type_vocab_size": type_vocab_size, "embed_dim": embed_dim}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not layers:
            raise ValueError("layers must hold at least one block, got none")
        specs = [_layer_spec(i, spec) for i, spec in enumerate(layers)]
        self._config = {**sizes, "layers": specs, "layer_norm_eps": float(layer_norm_eps)}
        if (output_dim is None) != (output_index is None):
            raise ValueError("output_dim and output_index must be given together or not at all")
        if output_index is not None:
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
        self.word = nn.Embedding(vocab_size, embed_dim)
        self.position = nn.Embedding(max_positions, embed_dim)
        self.token_type = nn.Embedding(type_vocab_size, embed_dim)
        self.embed_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.blocks = nn.ModuleList(
            BertBlock(embed_dim, s["heads"], s["qk_dim"], s["v_dim"], s["ffn_dim"],
                      s["temperature"], layer_norm_eps)
            for s in specs
        )

    @property
    def embed_dim(self) -> int:
        return self._config["embed_dim"]

    @property
    def vocab_size(self) -> int:
        return self._config["vocab_size"]

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able kwargs: ``BertEncoder(**subnet_config())`` rebuilds it."""
        cfg = {**self._config, "layers": [dict(s) for s in self._config["layers"]]}
        if "output_index" in cfg:
            cfg["output_index"] = list(cfg["output_index"])
        return cfg

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        limit = self._config["max_positions"]
        if input_ids.shape[1] > limit:
            raise ValueError(f"input_ids must hold at most {limit} tokens, "
                             f"got {input_ids.shape[1]}")
        dtype = self.word.weight.dtype
        bias = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type.weight[0]
        x = self.embed_norm(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x, bias)
        if self.output_index is None:
            return x
        fill = self.out_fill.expand(*x.shape[:-1], -1)  # (B, T, output_dim)
        return fill.index_copy(-1, self.output_index, x)


def _layer_spec(i: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in _LAYER_KEYS if key not in spec]
    if missing:
        raise ValueError(f"layers[{i}] lacks {missing}; a block needs {list(_LAYER_KEYS)}")
    out: dict[str, Any] = {}
    for key in _LAYER_KEYS:
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"layers[{i}].{key} must be an integer >= 1, got {value!r}")
        out[key] = value
    out["temperature"] = float(spec.get("temperature", math.sqrt(out["qk_dim"])))
    if out["temperature"] <= 0:
        raise ValueError(f"layers[{i}].temperature must be > 0, got {out['temperature']}")
    return out


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
    def full(cls, model: BertEncoder) -> Keep:
        """Every unit of ``model``."""
        blocks = model.blocks
        return cls(
            embed=tuple(range(model.embed_dim)),
            heads=tuple(tuple(range(b.heads)) for b in blocks),
            qk=tuple(tuple(range(b.qk_dim)) for b in blocks),
            v=tuple(tuple(range(b.v_dim)) for b in blocks),
            ffn=tuple(tuple(range(b.ffn_in.out_features)) for b in blocks),
        )


def _rows(heads: Sequence[int], units: Sequence[int], width: int) -> Tensor:
    """Flat indices of ``units`` within each of ``heads`` (head-major, width per head)."""
    return torch.tensor([h * width + u for h in heads for u in units], dtype=torch.long)


def shrink(model: BertEncoder, keep: Keep) -> BertEncoder:
    """A physically smaller copy of ``model`` holding only the units in ``keep``.

    Raises:
        ValueError: ``keep`` empties a dimension or names a unit the model lacks.
    """
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
    cfg = model.subnet_config()
    cfg["embed_dim"] = len(keep.embed)
    for spec, heads, qk, v, ffn in zip(cfg["layers"], keep.heads, keep.qk, keep.v, keep.ffn):
        spec.update(heads=len(heads), qk_dim=len(qk), v_dim=len(v), ffn_dim=len(ffn))
    e = torch.tensor(keep.embed, dtype=torch.long)
    state = model.state_dict()
    new: dict[str, Tensor] = {}
    if model.output_index is not None:  # already pruned: keep the original output width
        cfg["output_index"] = [cfg["output_index"][i] for i in keep.embed]
        new["out_fill"] = state["out_fill"]
    elif len(keep.embed) < model.embed_dim:
        cfg.update(output_dim=model.embed_dim, output_index=list(keep.embed))
        new["out_fill"] = state[f"blocks.{len(model.blocks) - 1}.ffn_norm.bias"].clone()
    small = BertEncoder(**cfg)
    for name in ("word", "position", "token_type"):
        new[f"{name}.weight"] = state[f"{name}.weight"][:, e]
    for part in ("weight", "bias"):
        new[f"embed_norm.{part}"] = state[f"embed_norm.{part}"][e]
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
    small.load_state_dict({k: v.clone() for k, v in new.items()}, strict=True)
    return small.train(model.training)


def bert_from_minilm(model: nn.Module) -> BertEncoder:
    """Our MiniLM (:class:`nas.supernets._minilm.MiniLM`) as a :class:`BertEncoder` with
    identical outputs (the weights are copied, not shared)."""
    cfg = model.config
    heads = cfg.num_attention_heads
    if cfg.hidden_size % heads:
        raise ValueError(f"hidden_size {cfg.hidden_size} must divide by heads {heads}")
    width = cfg.hidden_size // heads
    layer = {"heads": heads, "qk_dim": width, "v_dim": width,
             "ffn_dim": cfg.intermediate_size}
    bert = BertEncoder(
        vocab_size=cfg.vocab_size, max_positions=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size, embed_dim=cfg.hidden_size,
        layers=[layer] * cfg.num_hidden_layers, layer_norm_eps=cfg.layer_norm_eps,
    )
    src = model.state_dict()
    names = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    ours = {"query": "attention.self.query", "key": "attention.self.key",
            "value": "attention.self.value", "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(cfg.num_hidden_layers):
        for mine, theirs in ours.items():
            for part in ("weight", "bias"):
                names[f"blocks.{i}.{mine}.{part}"] = f"encoder.layer.{i}.{theirs}.{part}"
    bert.load_state_dict({k: src[v].detach().clone() for k, v in names.items()}, strict=True)
    return bert.train(model.training)
