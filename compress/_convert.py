"""Our transformers as :class:`DenseTransformer` s, with identical outputs.

Compression works on one model class, so each source is converted once: the pretrained
MiniLM, a MatFormer subnet (any Mix'n'Match model: a pre-LN causal byte LM) and a
FlexiBERT subnet whose layers are all scaled-dot-product self-attention with one FFN
layer at one hidden size (the BERT-shaped part of FlexiBERT's space; the other operations
have no heads or FFN units in NViT's sense) become :class:`DenseTransformer` s; a HAT
subnet (encoder-decoder) becomes a :class:`DenseSeq2Seq`. Weights are copied, never
shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from torch import Tensor, nn

from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._transformer import DenseTransformer
from nas.supernets.flexibert._dense import FlexiBERTSubnet
from nas.supernets.hat._dense import HATSubnet
from nas.supernets.matformer._dense import MatFormerLM

__all__ = ["SOURCES", "bert_from_minilm", "seq2seq_from_hat", "to_transformer",
           "transformer_from_flexibert", "transformer_from_matformer"]

M = TypeVar("M", bound=nn.Module)
_BLOCK = ("query", "key", "value", "attn_out", "attn_norm", "ffn_in", "ffn_out", "ffn_norm")


def _load(model: M, tensors: Mapping[str, Tensor], training: bool) -> M:
    model.load_state_dict({k: v.detach().clone() for k, v in tensors.items()}, strict=True)
    return model.train(training)


def _linear_and_norm(state: Mapping[str, Tensor], names: Mapping[str, str]
                     ) -> dict[str, Tensor]:
    """``{ours.weight: state[theirs.weight], ours.bias: ...}`` for every pair of names."""
    return {f"{mine}.{part}": state[f"{theirs}.{part}"]
            for mine, theirs in names.items() for part in ("weight", "bias")}


def bert_from_minilm(model: nn.Module) -> DenseTransformer:
    """Our MiniLM (:class:`nas.supernets.tasks._minilm.MiniLM`): post-LN, token types, no head."""
    cfg = model.config
    heads = cfg.num_attention_heads
    if cfg.hidden_size % heads:
        raise ValueError(f"hidden_size {cfg.hidden_size} must divide by heads {heads}")
    width = cfg.hidden_size // heads
    layer = {"heads": heads, "qk_dim": width, "v_dim": width, "ffn_dim": cfg.intermediate_size}
    out = DenseTransformer(
        vocab_size=cfg.vocab_size, max_positions=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size, embed_dim=cfg.hidden_size,
        layers=[layer] * cfg.num_hidden_layers, layer_norm_eps=cfg.layer_norm_eps,
    )
    src = model.state_dict()
    tensors = {
        "word.weight": src["embeddings.word_embeddings.weight"],
        "position.weight": src["embeddings.position_embeddings.weight"],
        "token_type.weight": src["embeddings.token_type_embeddings.weight"],
        **_linear_and_norm(src, {"embed_norm": "embeddings.LayerNorm"}),
    }
    theirs = ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
              "output.dense", "output.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        tensors.update(_linear_and_norm(src, {
            f"blocks.{i}.{mine}": f"encoder.layer.{i}.{t}" for mine, t in zip(_BLOCK, theirs)}))
    return _load(out, tensors, model.training)


def transformer_from_matformer(model: MatFormerLM) -> DenseTransformer:
    """A MatFormer subnet: pre-LN, causal, no embedding LayerNorm, an LM head; its fused
    query/key/value projection split into three."""
    heads, d = model.n_heads, model.d_model
    width = d // heads
    out = DenseTransformer(
        vocab_size=model.vocab_size, max_positions=model.context, embed_dim=d,
        layers=[{"heads": heads, "qk_dim": width, "v_dim": width, "ffn_dim": f}
                for f in model.ffn_dims],
        layer_norm_eps=model.trunk.ln_f.eps, embed_norm=False, pre_norm=True, causal=True,
        out_dim=model.vocab_size,
    )
    src = model.trunk.state_dict()
    tensors = {"word.weight": src["tok_emb.weight"], "position.weight": src["pos_emb.weight"],
               **_linear_and_norm(src, {"final_norm": "ln_f", "head": "head"})}
    for i in range(len(model.ffn_dims)):
        p, q = f"blocks.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            for name, chunk in zip(("query", "key", "value"),
                                   src[q + f"attn.qkv.{part}"].split(d, dim=0)):
                tensors[p + f"{name}.{part}"] = chunk
        tensors.update(_linear_and_norm(src, {
            p + "attn_out": q + "attn.proj", p + "attn_norm": q + "ln1",
            p + "ffn_in": q + "ffn.fc1", p + "ffn_out": q + "ffn.fc2", p + "ffn_norm": q + "ln2",
        }))
    return _load(out, tensors, model.training)


def transformer_from_flexibert(model: FlexiBERTSubnet) -> DenseTransformer:
    """A FlexiBERT subnet whose every layer is ``sa-sdp`` with a one-layer FFN at one
    hidden size: post-LN, no token types, the projection to the teacher's width as head.

    Raises:
        ValueError: a layer with another operation, a deeper FFN or another hidden size.
    """
    cfg = model.subnet_config()
    specs = cfg["layers"]
    hidden = specs[0]["hidden"]
    for i, s in enumerate(specs):
        if s["op"] != "sa-sdp" or len(s["ffn"]) != 1 or s["hidden"] != hidden:
            raise ValueError(
                f"layer {i} is {s['op']} with FFN {s['ffn']} at hidden {s['hidden']}; "
                f"compression needs every layer sa-sdp with one FFN layer at one hidden size")
    out = DenseTransformer(
        vocab_size=cfg["vocab_size"], max_positions=cfg["max_positions"], embed_dim=hidden,
        layers=[{"heads": s["heads"], "qk_dim": hidden // s["heads"],
                 "v_dim": hidden // s["heads"], "ffn_dim": s["ffn"][0]} for s in specs],
        layer_norm_eps=cfg["layer_norm_eps"], out_dim=cfg["out_dim"],
    )
    src = model.state_dict()
    tensors = {"word.weight": src["word.weight"], "position.weight": src["position.weight"],
               **_linear_and_norm(src, {"embed_norm": "embed_norm", "head": "head"})}
    theirs = ("op.query", "op.key", "op.value", "op.out", "norm1", "ffn.stack.0", "ffn.out",
              "norm2")
    for i in range(len(specs)):
        tensors.update(_linear_and_norm(src, {
            f"blocks.{i}.{mine}": f"layers.{i}.{t}" for mine, t in zip(_BLOCK, theirs)}))
    return _load(out, tensors, model.training)


def _heads_width(attention: nn.Module, fused: nn.Linear, parts: int) -> dict[str, int]:
    heads = attention.heads
    return {"heads": heads, "width": fused.out_features // parts // heads}


def seq2seq_from_hat(model: HATSubnet) -> DenseSeq2Seq:
    """A HAT subnet: its fused q/k/v (self-attention) and k/v (encoder-decoder attention)
    projections split apart; positions, the embedding scale and the tied output kept."""
    enc_dim, dec_dim = model.encoder_embed.embedding_dim, model.decoder_embed.embedding_dim
    encoder, decoder = [], []
    for layer in model.encoder:
        a = _heads_width(layer.attn, layer.attn.qkv, 3)
        encoder.append({"heads": a["heads"], "qk_dim": a["width"], "v_dim": a["width"],
                        "ffn_dim": layer.fc1.out_features})
    for layer, ende in zip(model.decoder, model.ende_layers):
        a = _heads_width(layer.self_attn, layer.self_attn.qkv, 3)
        x = _heads_width(layer.ende_attn, layer.ende_attn.kv, 2)
        decoder.append({"heads": a["heads"], "qk_dim": a["width"], "v_dim": a["width"],
                        "ffn_dim": layer.fc1.out_features, "cross_heads": x["heads"],
                        "cross_qk_dim": x["width"], "cross_v_dim": x["width"],
                        "ende_layers": ende})
    out = DenseSeq2Seq(
        src_vocab=model.src_vocab, tgt_vocab=model.tgt_vocab, max_positions=model.max_positions,
        pad_index=model.pad_index, encoder_dim=enc_dim, decoder_dim=dec_dim,
        encoder_layers=encoder, decoder_layers=decoder,
        layer_norm_eps=model.encoder[0].attn_norm.eps,
    )
    src = model.state_dict()
    tensors = {name: src[name] for name in ("encoder_embed.weight", "decoder_embed.weight",
                                            "encoder_positions", "decoder_positions")}
    for i in range(len(model.encoder)):
        p = f"encoder.{i}."
        tensors.update(_split(src, p + "attn.qkv", (p + "attn.query", p + "attn.key",
                                                     p + "attn.value")))
        tensors.update(_linear_and_norm(src, {p + n: p + t for n, t in (
            ("attn.out", "attn.out"), ("attn_norm", "attn_norm"), ("ffn_in", "fc1"),
            ("ffn_out", "fc2"), ("ffn_norm", "ffn_norm"))}))
    for j in range(len(model.decoder)):
        p = f"decoder.{j}."
        tensors.update(_split(src, p + "self_attn.qkv", (p + "self_attn.query", p + "self_attn.key",
                                                          p + "self_attn.value")))
        tensors.update(_split(src, p + "ende_attn.kv", (p + "cross_attn.key",
                                                         p + "cross_attn.value")))
        tensors.update(_linear_and_norm(src, {p + n: p + t for n, t in (
            ("self_attn.out", "self_attn.out"), ("self_attn_norm", "self_attn_norm"),
            ("cross_attn.query", "ende_attn.q"), ("cross_attn.out", "ende_attn.out"),
            ("cross_norm", "ende_attn_norm"), ("ffn_in", "fc1"), ("ffn_out", "fc2"),
            ("ffn_norm", "ffn_norm"))}))
    return _load(out, tensors, model.training)


def _split(state: Mapping[str, Tensor], fused: str, names: tuple[str, ...]) -> dict[str, Tensor]:
    """A fused projection's weight and bias cut into equal row chunks, one per name."""
    out = {}
    for part in ("weight", "bias"):
        chunks = state[f"{fused}.{part}"].chunk(len(names), dim=0)
        out.update({f"{name}.{part}": chunk for name, chunk in zip(names, chunks)})
    return out


SOURCES: dict[type, Callable[[nn.Module], nn.Module]] = {
    MatFormerLM: transformer_from_matformer,
    FlexiBERTSubnet: transformer_from_flexibert,
    HATSubnet: seq2seq_from_hat,
}
"""Subnet classes of our supernets that compression converts, and how."""


def to_transformer(model: nn.Module) -> DenseTransformer | DenseSeq2Seq:
    """``model`` itself if it is already an IR model, else its conversion.

    Raises:
        ValueError: a model compression cannot convert (the message names those it can).
    """
    if isinstance(model, DenseTransformer | DenseSeq2Seq):
        return model
    for cls, convert in SOURCES.items():
        if isinstance(model, cls):
            return convert(model)
    names = ", ".join(cls.__name__ for cls in (DenseTransformer, DenseSeq2Seq, *SOURCES))
    raise ValueError(f"cannot compress a {type(model).__name__}; nas compress takes {names} "
                     f"(MiniLM, and MatFormer, FlexiBERT or HAT subnets from nas export)")

