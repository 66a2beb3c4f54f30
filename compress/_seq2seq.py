"""A dense, heterogeneous encoder-decoder transformer: the IR that compresses HAT subnets.

:class:`~nas.compress._transformer.DenseTransformer` holds one residual stream; an
encoder-decoder has two, of different widths (HAT samples the encoder's and the
decoder's embedding dims apart), and decoder blocks that attend to the encoder's width
through cross-attention. :class:`DenseSeq2Seq` is that model with the same per-block
freedom (heads, query/key and value width per head, FFN width, in self- and
cross-attention alike), so the same NViT saliency and shrinking apply to both groups
(:mod:`nas.compress._seq2seq_structures`).

The arithmetic is HAT's dense model's (:class:`nas.supernets.hat._dense.HATSubnet`):
post-LN blocks, ReLU FFNs, tokens scaled by a constant, sinusoidal positions, decoder
block ``i`` attending to the last ``ende_layers`` encoder outputs concatenated along time
(HAT's arbitrary encoder-decoder attention), logits tied to the decoder's embedding.

Two choices keep "remove a unit" equal to "zero its weights", as pruning's saliency
assumes: the embedding scale is a stored constant (the source's ``sqrt(dim)``), not
recomputed from the pruned width, and the position tables are stored buffers whose kept
columns survive pruning. HAT computes positions once at the largest width and slices them
(its SuperTransformer's ``positions[..., :sample_embed_dim]``; our extracted subnets hold
that slice), so a table recomputed at the pruned width would be neither the source's nor
HAT's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS
from nas.supernets.hat._dense import check_tokens, greedy_loop, token_positions

__all__ = ["FAMILY", "DenseSeq2Seq", "seq2seq_param_count"]

FAMILY = "transformer-seq2seq"
_SELF_KEYS = ("heads", "qk_dim", "v_dim", "ffn_dim")
_CROSS_KEYS = ("cross_heads", "cross_qk_dim", "cross_v_dim", "ende_layers")


class Attention(nn.Module):
    """Multi-head attention of queries from ``dim`` over keys/values from ``kv_dim``, with
    its own head count and query/key and value widths per head; ``temperature`` divides
    the scores and stays fixed when units are pruned."""

    def __init__(self, dim: int, kv_dim: int, heads: int, qk_dim: int, v_dim: int,
                 temperature: float) -> None:
        super().__init__()
        self.heads, self.qk_dim, self.v_dim, self.temperature = heads, qk_dim, v_dim, temperature
        self.query = nn.Linear(dim, heads * qk_dim)
        self.key = nn.Linear(kv_dim, heads * qk_dim)
        self.value = nn.Linear(kv_dim, heads * v_dim)
        self.out = nn.Linear(heads * v_dim, dim)

    def _split(self, x: Tensor, width: int) -> Tensor:  # (B, T, h*w) -> (B, h, T, w)
        return x.view(x.shape[0], x.shape[1], self.heads, width).transpose(1, 2)

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (B, h, S, dq) and values (B, h, S, dv) of ``memory`` (B, S, kv_dim)."""
        return (self._split(self.key(memory), self.qk_dim),
                self._split(self.value(memory), self.v_dim))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        q = self._split(self.query(x), self.qk_dim)  # (B, h, T, dq)
        scores = q @ k.transpose(-1, -2) / self.temperature + bias  # (B, h, T, S)
        context = (scores.softmax(-1) @ v).transpose(1, 2)  # (B, T, h, dv)
        return self.out(context.reshape(x.shape[0], x.shape[1], -1))  # (B, T, C)


class _FFN(nn.Module):
    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.ffn_out(F.relu(self.ffn_in(x)))


class EncoderBlock(_FFN):
    """``a = LN(x + attn(x))``, ``y = LN(a + ffn(a))``."""

    def __init__(self, dim: int, s: Mapping[str, Any], eps: float) -> None:
        super().__init__(dim, s["ffn_dim"])
        self.attn = Attention(dim, dim, s["heads"], s["qk_dim"], s["v_dim"], s["temperature"])
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:  # x (B, S, E)
        a = self.attn_norm(x + self.attn.attend(x, *self.attn.keys_values(x), bias))
        return self.ffn_norm(a + self.feed_forward(a))


class DecoderBlock(_FFN):
    """Causal self-attention, cross-attention over the encoder (width ``memory_dim``),
    FFN; each post-LN."""

    def __init__(self, dim: int, memory_dim: int, s: Mapping[str, Any], eps: float) -> None:
        super().__init__(dim, s["ffn_dim"])
        self.self_attn = Attention(dim, dim, s["heads"], s["qk_dim"], s["v_dim"],
                                   s["temperature"])
        self.self_attn_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, memory_dim, s["cross_heads"], s["cross_qk_dim"],
                                    s["cross_v_dim"], s["cross_temperature"])
        self.cross_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def _rest(self, x: Tensor, k: Tensor, v: Tensor, memory_bias: Tensor) -> Tensor:
        x = self.cross_norm(x + self.cross_attn.attend(x, k, v, memory_bias))
        return self.ffn_norm(x + self.feed_forward(x))

    def forward(self, x: Tensor, causal: Tensor, k: Tensor, v: Tensor, memory_bias: Tensor
                ) -> Tensor:  # x (B, T, D); k, v over the encoder positions
        x = self.self_attn_norm(x + self.self_attn.attend(x, *self.self_attn.keys_values(x),
                                                          causal))
        return self._rest(x, k, v, memory_bias)

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor] | None, k: Tensor, v: Tensor,
             memory_bias: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One new position x (B, 1, D) attending to itself and the cached past."""
        self_k, self_v = self.self_attn.keys_values(x)  # (B, h, 1, d)
        if cache is not None:
            self_k, self_v = torch.cat([cache[0], self_k], 2), torch.cat([cache[1], self_v], 2)
        y = self.self_attn.attend(x, self_k, self_v, memory_bias.new_zeros(()))
        return self._rest(self.self_attn_norm(x + y), k, v, memory_bias), (self_k, self_v)


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _spec(side: str, i: int, spec: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    missing = [k for k in keys if k not in spec]
    if missing:
        raise ValueError(f"{side}_layers[{i}] lacks {missing}; it needs {list(keys)}")
    out: dict[str, Any] = {k: _positive(f"{side}_layers[{i}].{k}", spec[k]) for k in keys}
    for prefix in ("", "cross_") if side == "decoder" else ("",):
        name = f"{prefix}temperature"
        out[name] = float(spec.get(name, math.sqrt(out[f"{prefix}qk_dim"])))
        if out[name] <= 0:
            raise ValueError(f"{side}_layers[{i}].{name} must be > 0, got {out[name]}")
    return out


@SUBNET_BUILDERS.register(FAMILY, description="dense encoder-decoder transformer (compressed)")
class DenseSeq2Seq(nn.Module):
    """An encoder-decoder transformer with per-block head counts and widths.

    Args:
        src_vocab: the source token table's size.
        tgt_vocab: the target token table's size (``pad_index`` is the padding token).
        max_positions: the longest source or target sequence.
        encoder_dim: the encoder's residual width.
        decoder_dim: the decoder's residual width.
        encoder_layers: per block ``{"heads", "qk_dim", "v_dim", "ffn_dim"}`` (widths per
            head) and optionally ``"temperature"``.
        decoder_layers: the same for self-attention, plus ``"cross_heads"``,
            ``"cross_qk_dim"``, ``"cross_v_dim"``, optionally ``"cross_temperature"``,
            and ``"ende_layers"`` (how many of the last encoder outputs it attends to).
        encoder_scale: what source token embeddings are multiplied by (default ``sqrt``
            of the width).
        decoder_scale: the same for target token embeddings.
        layer_norm_eps: epsilon of every LayerNorm.

    ``forward(src (B, S), prev (B, T))`` returns teacher-forced logits ``(B, T, tgt_vocab)``;
    :meth:`greedy_decode` translates, as the G2P task expects of a seq2seq model.

    Raises:
        ValueError: no layers, a missing key, a size below 1, or ``ende_layers`` above the
            encoder's depth.
    """

    def __init__(
        self,
        *,
        src_vocab: int,
        tgt_vocab: int,
        max_positions: int,
        encoder_dim: int,
        decoder_dim: int,
        encoder_layers: Sequence[Mapping[str, Any]],
        decoder_layers: Sequence[Mapping[str, Any]],
        pad_index: int = 0,
        encoder_scale: float | None = None,
        decoder_scale: float | None = None,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        sizes = {k: _positive(k, v) for k, v in (
            ("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("max_positions", max_positions),
            ("encoder_dim", encoder_dim), ("decoder_dim", decoder_dim))}
        if not encoder_layers or not decoder_layers:
            raise ValueError("encoder_layers and decoder_layers must each hold at least one "
                             f"block, got {len(encoder_layers)} and {len(decoder_layers)}")
        enc = [_spec("encoder", i, s, _SELF_KEYS) for i, s in enumerate(encoder_layers)]
        dec = [_spec("decoder", i, s, _SELF_KEYS + _CROSS_KEYS)
               for i, s in enumerate(decoder_layers)]
        deepest = max(s["ende_layers"] for s in dec)
        if deepest > len(enc):
            raise ValueError(f"a decoder block attends to the last {deepest} encoder blocks "
                             f"but the encoder has {len(enc)}")
        self._config: dict[str, Any] = {
            **sizes, "pad_index": int(pad_index), "encoder_layers": enc, "decoder_layers": dec,
            "encoder_scale": float(encoder_scale or math.sqrt(encoder_dim)),
            "decoder_scale": float(decoder_scale or math.sqrt(decoder_dim)),
            "layer_norm_eps": float(layer_norm_eps),
        }
        self.max_positions, self.pad_index = max_positions, int(pad_index)
        eps = float(layer_norm_eps)
        self.encoder_embed = nn.Embedding(src_vocab, encoder_dim, padding_idx=pad_index)
        self.decoder_embed = nn.Embedding(tgt_vocab, decoder_dim, padding_idx=pad_index)
        # (P + 1, width): row 0 is the padding position; stored, so pruning keeps columns
        self.register_buffer("encoder_positions", torch.zeros(max_positions + 1, encoder_dim))
        self.register_buffer("decoder_positions", torch.zeros(max_positions + 1, decoder_dim))
        self.encoder = nn.ModuleList(EncoderBlock(encoder_dim, s, eps) for s in enc)
        self.decoder = nn.ModuleList(DecoderBlock(decoder_dim, encoder_dim, s, eps) for s in dec)
        mask = torch.ones(max_positions, max_positions, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)

    @property
    def blocks(self) -> nn.ModuleList:
        """Every block, the encoder's first (what ``count_params(which="encoder")`` counts)."""
        return nn.ModuleList([*self.encoder, *self.decoder])

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able kwargs: ``DenseSeq2Seq(**subnet_config())`` rebuilds it."""
        cfg = dict(self._config)
        for side in ("encoder_layers", "decoder_layers"):
            cfg[side] = [dict(s) for s in self._config[side]]
        return cfg

    # -- forward ---------------------------------------------------------------------

    def _bias(self, keep: Tensor) -> Tensor:
        """An additive bias ``(B|1, 1, T|1, S)`` from a boolean "attend here" mask."""
        dtype = self.encoder_embed.weight.dtype
        return (~keep).to(dtype) * torch.finfo(dtype).min

    def encode(self, src: Tensor) -> tuple[list[Tensor], Tensor]:
        """The encoder blocks' outputs (last first, each (B, S, E)) and the padding (B, S)."""
        check_tokens("src_tokens", src, self.max_positions)
        padding = src.eq(self.pad_index)
        bias = self._bias(~padding[:, None, None, :])
        x = (self._config["encoder_scale"] * self.encoder_embed(src)
             + self.encoder_positions[token_positions(src, self.pad_index)])
        states = []
        for block in self.encoder:
            x = block(x, bias)
            states.append(x)
        return states[::-1], padding

    def _memories(self, src: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per decoder block: cross-attention keys, values and bias over its memory."""
        states, padding = self.encode(src)
        out = []
        for block in self.decoder:
            count = self._config["decoder_layers"][len(out)]["ende_layers"]
            memory = torch.cat(states[:count], dim=1)  # (B, count * S, E)
            bias = self._bias(~padding.repeat(1, count)[:, None, None, :])
            out.append((*block.cross_attn.keys_values(memory), bias))
        return out

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        check_tokens("prev_output_tokens", prev_output_tokens, self.max_positions)
        memories = self._memories(src_tokens)
        t = prev_output_tokens.shape[1]
        causal = self._bias(self.causal_mask[:t, :t])  # (T, T)
        x = (self._config["decoder_scale"] * self.decoder_embed(prev_output_tokens)
             + self.decoder_positions[token_positions(prev_output_tokens, self.pad_index)])
        for block, (k, v, bias) in zip(self.decoder, memories):
            x = block(x, causal, k, v, bias)  # (B, T, D)
        return F.linear(x, self.decoder_embed.weight)  # (B, T, V)

    @torch.no_grad()
    def greedy_decode(self, src_tokens: Tensor, *, max_len: int, steps: int | None = None
                      ) -> Tensor:
        """Greedy decoding (B, n), bos excluded, with a key/value cache of past target
        positions, as ``HATSubnet.greedy_decode``."""
        memories = self._memories(src_tokens)
        caches: list[tuple[Tensor, Tensor] | None] = [None] * len(self.decoder)
        scale = self._config["decoder_scale"]

        def step(token: Tensor, position: int) -> Tensor:
            x = scale * self.decoder_embed(token) + self.decoder_positions[position]  # (B, 1, D)
            for i, (block, (k, v, bias)) in enumerate(zip(self.decoder, memories)):
                x, caches[i] = block.step(x, caches[i], k, v, bias)
            return F.linear(x[:, 0], self.decoder_embed.weight)  # (B, V)

        return greedy_loop(step, src_tokens.shape[0], src_tokens.device, max_len=max_len,
                           steps=steps, max_positions=self.max_positions,
                           pad_index=self.pad_index)


def _attention_params(dim: int, kv_dim: int, heads: int, qk: int, v: int) -> int:
    q, w = heads * qk, heads * v
    return (dim * q + q) + (kv_dim * q + q) + (kv_dim * w + w) + (w * dim + dim)


def seq2seq_param_count(config: Mapping[str, Any], *, which: str = "all") -> int:
    """Parameters of ``DenseSeq2Seq(**config)`` without building it: ``all``, or the
    ``encoder`` count (every block, as for :class:`DenseTransformer`)."""
    e, d = config["encoder_dim"], config["decoder_dim"]
    blocks = 0
    for s in config["encoder_layers"]:
        blocks += _attention_params(e, e, s["heads"], s["qk_dim"], s["v_dim"])
        blocks += 2 * e * s["ffn_dim"] + s["ffn_dim"] + e + 4 * e
    for s in config["decoder_layers"]:
        blocks += _attention_params(d, d, s["heads"], s["qk_dim"], s["v_dim"])
        blocks += _attention_params(d, e, s["cross_heads"], s["cross_qk_dim"], s["cross_v_dim"])
        blocks += 2 * d * s["ffn_dim"] + s["ffn_dim"] + d + 6 * d
    if which == "encoder":
        return blocks
    return blocks + config["src_vocab"] * e + config["tgt_vocab"] * d
