"""The prunable structures of a :class:`DenseSeq2Seq`, and shrinking it to the kept units.

The kinds of :mod:`nas.compress._structures` (``head``, ``qk``, ``v``, ``ffn``) in every
block, encoder and decoder alike, plus cross-attention's own ``xhead``, ``xqk`` and ``xv``
in decoder blocks (its queries read the decoder's width, its keys and values the
encoder's), and one embedding kind per residual stream: ``enc_embed`` (a dim of the
encoder's stream: its table column, every encoder block's input columns, output rows and
LayerNorm entries, and every decoder block's cross-attention key/value input columns) and
``dec_embed`` (the decoder's; the tied output projection is its table). Blocks are
numbered encoder first, then decoder (block ``len(encoder) + j`` is decoder block ``j``).

A *keep* here maps each NViT layer ``(kind, block)`` to the sorted units kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._structures import ParamSlice, Structure

__all__ = ["KINDS", "SeqKeep", "keep_full", "keep_without", "layer_sizes", "resized", "shrink",
           "shrunk_config", "structures"]

KINDS = ("head", "qk", "v", "ffn", "xhead", "xqk", "xv", "enc_embed", "dec_embed")
LayerKey = tuple[str, int | None]
SeqKeep = Mapping[LayerKey, tuple[int, ...]]
_SELF = {"head": "heads", "qk": "qk_dim", "v": "v_dim", "ffn": "ffn_dim"}
_CROSS = {"xhead": "cross_heads", "xqk": "cross_qk_dim", "xv": "cross_v_dim"}
_EMBED = {"enc_embed": "encoder_dim", "dec_embed": "decoder_dim"}


def _blocks(config: Mapping[str, Any]) -> list[tuple[int, str, int, Mapping[str, Any]]]:
    """``(global block, side, index within side, spec)`` for every block."""
    enc, dec = config["encoder_layers"], config["decoder_layers"]
    return ([(i, "encoder", i, s) for i, s in enumerate(enc)]
            + [(len(enc) + j, "decoder", j, s) for j, s in enumerate(dec)])


def layer_sizes(model: DenseSeq2Seq) -> dict[LayerKey, int]:
    """Units in each NViT layer."""
    config = model.subnet_config()
    sizes: dict[LayerKey, int] = {(k, None): config[key] for k, key in _EMBED.items()}
    for g, side, _, spec in _blocks(config):
        kinds = {**_SELF, **(_CROSS if side == "decoder" else {})}
        sizes.update({(kind, g): spec[key] for kind, key in kinds.items()})
    return sizes


def keep_full(model: DenseSeq2Seq) -> dict[LayerKey, tuple[int, ...]]:
    """Every unit of ``model``."""
    return {key: tuple(range(n)) for key, n in layer_sizes(model).items()}


def keep_without(model: DenseSeq2Seq, removed: list[Structure]) -> dict[LayerKey, tuple[int, ...]]:
    """The keep of ``model`` once the ``removed`` structures are gone."""
    drop: dict[LayerKey, set[int]] = {}
    for s in removed:
        drop.setdefault(s.layer_key, set()).add(s.index)
    return {key: tuple(u for u in units if u not in drop.get(key, ()))
            for key, units in keep_full(model).items()}


def resized(model: DenseSeq2Seq, sizes: Mapping[LayerKey, int]) -> dict[str, Any]:
    """``model``'s config with each layer holding ``sizes[layer]`` units (the rest as is)."""
    cfg = model.subnet_config()
    for kind, key in _EMBED.items():
        cfg[key] = sizes.get((kind, None), cfg[key])
    for g, side, i, _ in _blocks(cfg):
        spec = cfg[f"{side}_layers"][i]
        kinds = {**_SELF, **(_CROSS if side == "decoder" else {})}
        spec.update({key: sizes.get((kind, g), spec[key]) for kind, key in kinds.items()})
    return cfg


def shrunk_config(model: DenseSeq2Seq, keep: SeqKeep) -> dict[str, Any]:
    """The config of ``shrink(model, keep)``, without copying weights."""
    return resized(model, {key: len(units) for key, units in keep.items()})


def _attention(prefix: str, g: int, heads: int, dq: int, dv: int, kinds: tuple[str, str, str]
               ) -> list[Structure]:
    head_kind, qk_kind, v_kind = kinds
    out = []
    for h in range(heads):
        qk, v = tuple(range(h * dq, (h + 1) * dq)), tuple(range(h * dv, (h + 1) * dv))
        out.append(Structure(head_kind, g, h, (
            *(ParamSlice(f"{prefix}{n}.{part}", 0, qk) for n in ("query", "key")
              for part in ("weight", "bias")),
            ParamSlice(prefix + "value.weight", 0, v), ParamSlice(prefix + "value.bias", 0, v),
            ParamSlice(prefix + "out.weight", 1, v))))
    for u in range(dq):
        rows = tuple(h * dq + u for h in range(heads))
        out.append(Structure(qk_kind, g, u, tuple(
            ParamSlice(f"{prefix}{n}.{part}", 0, rows) for n in ("query", "key")
            for part in ("weight", "bias"))))
    for u in range(dv):
        rows = tuple(h * dv + u for h in range(heads))
        out.append(Structure(v_kind, g, u, (
            ParamSlice(prefix + "value.weight", 0, rows),
            ParamSlice(prefix + "value.bias", 0, rows),
            ParamSlice(prefix + "out.weight", 1, rows))))
    return out


def _ffn(prefix: str, g: int, width: int) -> list[Structure]:
    return [Structure("ffn", g, u, (
        ParamSlice(prefix + "ffn_in.weight", 0, (u,)), ParamSlice(prefix + "ffn_in.bias", 0, (u,)),
        ParamSlice(prefix + "ffn_out.weight", 1, (u,)))) for u in range(width)]


def _stream(u: int, inputs: list[str], outputs: list[str], norms: list[str]) -> list[ParamSlice]:
    """One residual dim: input columns of ``inputs``, output rows and biases of
    ``outputs``, entries of ``norms``."""
    return ([ParamSlice(f"{n}.weight", 1, (u,)) for n in inputs]
            + [ParamSlice(f"{n}.{p}", 0, (u,)) for n in outputs + norms
               for p in ("weight", "bias")])


def structures(model: DenseSeq2Seq) -> list[Structure]:
    """Every prunable structure of ``model``, block by block, the embedding dims last."""
    if not isinstance(model, DenseSeq2Seq):
        raise TypeError(f"model must be a DenseSeq2Seq, got {type(model).__name__}")
    config = model.subnet_config()
    out: list[Structure] = []
    enc_in, enc_out, enc_norms, dec_in, dec_out, dec_norms = [], [], [], [], [], []
    for g, side, i, s in _blocks(config):
        p = f"{side}.{i}."
        attn = p + ("attn." if side == "encoder" else "self_attn.")
        out += _attention(attn, g, s["heads"], s["qk_dim"], s["v_dim"], ("head", "qk", "v"))
        if side == "decoder":
            out += _attention(p + "cross_attn.", g, s["cross_heads"], s["cross_qk_dim"],
                              s["cross_v_dim"], ("xhead", "xqk", "xv"))
        out += _ffn(p, g, s["ffn_dim"])
        if side == "encoder":
            enc_in += [attn + n for n in ("query", "key", "value")] + [p + "ffn_in"]
            enc_out += [attn + "out", p + "ffn_out"]
            enc_norms += [p + "attn_norm", p + "ffn_norm"]
        else:
            enc_in += [p + "cross_attn.key", p + "cross_attn.value"]
            dec_in += [attn + n for n in ("query", "key", "value")] + [
                p + "cross_attn.query", p + "ffn_in"]
            dec_out += [attn + "out", p + "cross_attn.out", p + "ffn_out"]
            dec_norms += [p + "self_attn_norm", p + "cross_norm", p + "ffn_norm"]
    for kind, table, stream in (("enc_embed", "encoder", (enc_in, enc_out, enc_norms)),
                                ("dec_embed", "decoder", (dec_in, dec_out, dec_norms))):
        for u in range(config[f"{table}_dim"]):
            out.append(Structure(kind, None, u, tuple(
                [ParamSlice(f"{table}_embed.weight", 1, (u,))] + _stream(u, *stream))))
    return out


def _check(model: DenseSeq2Seq, keep: SeqKeep) -> None:
    full = keep_full(model)
    if set(keep) != set(full):
        raise ValueError(f"keep must name every layer of the model: {sorted(map(str, full))}")
    for key, units in keep.items():
        if not units or not set(units) <= set(full[key]) or len(set(units)) != len(units):
            raise ValueError(f"keep{key} must be distinct existing units, at least one, "
                             f"got {units!r}")


def _rows(heads: tuple[int, ...], units: tuple[int, ...], width: int) -> Tensor:
    return torch.tensor([h * width + u for h in heads for u in units], dtype=torch.long)


def _shrink_attention(state: dict[str, Tensor], new: dict[str, Tensor], prefix: str,
                      rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]) -> None:
    """``rows``: kept query/key and value rows; ``cols``: kept query-side and key/value-side
    input dims (the output projection's rows are the query side's)."""
    qk, v = rows
    q_in, kv_in = cols
    for name, r, c in (("query", qk, q_in), ("key", qk, kv_in), ("value", v, kv_in)):
        new[f"{prefix}{name}.weight"] = state[f"{prefix}{name}.weight"][r][:, c]
        new[f"{prefix}{name}.bias"] = state[f"{prefix}{name}.bias"][r]
    new[prefix + "out.weight"] = state[prefix + "out.weight"][q_in][:, v]
    new[prefix + "out.bias"] = state[prefix + "out.bias"][q_in]


def shrink(model: DenseSeq2Seq, keep: SeqKeep) -> DenseSeq2Seq:
    """A physically smaller copy of ``model`` holding only the units in ``keep``.

    Raises:
        ValueError: ``keep`` empties a layer or names a unit the model lacks.
    """
    _check(model, keep)
    config = model.subnet_config()
    state = model.state_dict()
    e = torch.tensor(keep[("enc_embed", None)], dtype=torch.long)
    d = torch.tensor(keep[("dec_embed", None)], dtype=torch.long)
    new: dict[str, Tensor] = {
        "encoder_embed.weight": state["encoder_embed.weight"][:, e],
        "decoder_embed.weight": state["decoder_embed.weight"][:, d],
        "encoder_positions": state["encoder_positions"][:, e],
        "decoder_positions": state["decoder_positions"][:, d],
    }
    for g, side, i, s in _blocks(config):
        p = f"{side}.{i}."
        width = e if side == "encoder" else d
        attn = p + ("attn." if side == "encoder" else "self_attn.")
        _shrink_attention(state, new, attn, (_rows(keep[("head", g)], keep[("qk", g)], s["qk_dim"]),
                                             _rows(keep[("head", g)], keep[("v", g)], s["v_dim"])),
                          (width, width))
        if side == "decoder":
            _shrink_attention(state, new, p + "cross_attn.", (
                _rows(keep[("xhead", g)], keep[("xqk", g)], s["cross_qk_dim"]),
                _rows(keep[("xhead", g)], keep[("xv", g)], s["cross_v_dim"])), (d, e))
        f = torch.tensor(keep[("ffn", g)], dtype=torch.long)
        new[p + "ffn_in.weight"] = state[p + "ffn_in.weight"][f][:, width]
        new[p + "ffn_in.bias"] = state[p + "ffn_in.bias"][f]
        new[p + "ffn_out.weight"] = state[p + "ffn_out.weight"][width][:, f]
        new[p + "ffn_out.bias"] = state[p + "ffn_out.bias"][width]
        norms = (("attn_norm", "ffn_norm") if side == "encoder"
                 else ("self_attn_norm", "cross_norm", "ffn_norm"))
        for norm in norms:
            for part in ("weight", "bias"):
                new[f"{p}{norm}.{part}"] = state[f"{p}{norm}.{part}"][width]
    small = DenseSeq2Seq(**shrunk_config(model, keep))
    small.load_state_dict({k: v.clone() for k, v in new.items()}, strict=True)
    return small.train(model.training)
