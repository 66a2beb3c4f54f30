"""The dense HAT SubTransformer: a plain encoder-decoder transformer, no supernet code.

:class:`HATSubnet` is what ``HATSuperTransformer.extract`` returns and what an exported
HAT subnet is rebuilt as (``SUBNET_BUILDERS.create("hat", **config)``), so this module
imports only torch and the registry. Hardware latency is measured on it, so each layer
does few ops per decoding step: one fused q/k/v projection in self-attention, a key/value
cache for past target positions, encoder-decoder keys/values computed once per sequence.

Architecture as HAT's ``transformersuper_wmt_en_de`` (Wang et al., ACL 2020): post-norm
layers, ReLU FFNs, fairseq sinusoidal positions, token embeddings scaled by
``sqrt(embed_dim)``, the output projection tied to the decoder's input embedding, and
"arbitrary encoder-decoder attention": decoder layer ``i`` attends to the concatenation
(along time) of the last ``ende_layers`` encoder layers' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS

__all__ = ["HATEncoderOut", "HATSubnet"]

BOS, EOS = 1, 2
"""The task's token convention: 0 = pad, 1 = bos, 2 = eos, 3 = unk."""


class HATEncoderOut(NamedTuple):
    """What ``encode`` returns.

    ``states`` holds the outputs of the top encoder layers, the last layer first (as many
    as any decoder layer attends to), each (B, S, E); ``padding_mask`` is (B, S), True at
    padding.
    """

    states: tuple[Tensor, ...]
    padding_mask: Tensor

    @property
    def out(self) -> Tensor:
        """The last encoder layer's output (B, S, E)."""
        return self.states[0]


# -- helpers shared with the supernet (it may import from here, never the reverse) -----


def sinusoidal_table(max_positions: int, dim: int) -> Tensor:
    """fairseq's sinusoidal positions (sines, then cosines) for positions
    ``1..max_positions``; row 0 is the padding position and stays zero.

    Computed on the CPU, then moved to the default device (cheap under ``meta``).
    """
    cpu = torch.device("cpu")
    half = dim // 2
    step = math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=cpu) * -step)  # (half,)
    angle = torch.arange(max_positions + 1, dtype=torch.float32, device=cpu)[:, None] * freq
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)  # (P + 1, 2 * half)
    if dim % 2:
        table = F.pad(table, (0, 1))
    table[0] = 0.0
    return table.to(torch.empty(0).device)  # (P + 1, dim)


def token_positions(tokens: Tensor, pad_index: int) -> Tensor:
    """fairseq's ``make_positions``: 1, 2, ... over non-pad tokens, 0 at padding."""
    keep = tokens.ne(pad_index).long()  # integers: ONNX has no CumSum over booleans
    return torch.cumsum(keep, dim=1) * keep  # (B, T)


def check_tokens(name: str, tokens: Tensor, max_positions: int) -> None:
    """Validate a (batch, length) integer token tensor at the model's edge."""
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{name} must be an integer tensor of shape (batch, length), "
            f"got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if tokens.shape[1] > max_positions:
        raise ValueError(
            f"{name} has length {tokens.shape[1]}, more than max_positions={max_positions}"
        )


def ende_memory(enc: HATEncoderOut, layers: int) -> tuple[Tensor, Tensor]:
    """HAT's arbitrary encoder-decoder attention input: the last ``layers`` encoder
    outputs concatenated along time (last layer first) and the padding mask repeated."""
    memory = torch.cat(enc.states[:layers], dim=1)  # (B, layers * S, E)
    mask = enc.padding_mask.repeat(1, layers)  # (B, layers * S)
    return memory, mask


def attend_mask(padding_mask: Tensor) -> Tensor | None:
    """A boolean SDPA mask (B, 1, 1, S), True where keys take part; None without padding
    (except while tracing: a traced graph must hold the mask for inputs that have some)."""
    if not torch.jit.is_tracing() and not bool(padding_mask.any()):
        return None
    return ~padding_mask[:, None, None, :]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, h * hd) -> (B, h, T, hd)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, T, hd) -> (B, T, h * hd)."""
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def greedy_loop(
    step: Callable[[Tensor, int], Tensor],
    batch: int,
    device: torch.device,
    *,
    max_len: int,
    steps: int | None,
    max_positions: int,
    pad_index: int,
) -> Tensor:
    """Greedy autoregressive decoding shared by the supernet and the dense model.

    ``step(tokens (B, 1), position) -> logits (B, V)`` advances the decoder by one token
    at 1-based ``position``. Decodes exactly ``steps`` tokens when given, else stops when
    every row has emitted eos or at ``max_len``. Tokens after a row's eos read pad.
    """
    count = max_len if steps is None else steps
    if count < 0 or (steps is None and max_len < 1):
        raise ValueError(f"max_len must be >= 1 and steps >= 0, got {max_len=}, {steps=}")
    if count > max_positions:
        raise ValueError(
            f"cannot decode {count} tokens: the model has max_positions={max_positions}"
        )
    token = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out: list[Tensor] = []
    for t in range(count):
        nxt = step(token, t + 1).argmax(dim=-1).masked_fill(finished, pad_index)  # (B,)
        out.append(nxt)
        finished |= nxt.eq(EOS)
        if steps is None and bool(finished.all()):
            break
        token = nxt[:, None]
    if not out:
        return torch.empty(batch, 0, dtype=torch.long, device=device)
    return torch.stack(out, dim=1)  # (B, n)


# -- layers ----------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, dim: int, heads: int, width: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * width)
        self.out = nn.Linear(width, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, -1)  # (B, T, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, T, hd)
        return q, k, v

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        q, k, v = self._qkv(x)  # (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(merge_heads(y))  # (B, T, C)

    def step(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One new position x (B, 1, C) attending to itself and the cached past."""
        q, k, v = self._qkv(x)  # (B, h, 1, hd)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (B, h, t, hd)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(merge_heads(y)), k, v


class CrossAttention(nn.Module):
    """Encoder-decoder attention; keys/values come from :meth:`memory_kv`, once per sequence."""

    def __init__(self, dim: int, memory_dim: int, heads: int, width: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, width)
        self.kv = nn.Linear(memory_dim, 2 * width)
        self.out = nn.Linear(width, dim)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        batch, length, _ = memory.shape
        kv = self.kv(memory).view(batch, length, 2, self.heads, -1)  # (B, S, 2, h, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, S, hd)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.q(x), self.heads)  # (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(merge_heads(y))  # (B, T, C)


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, width: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, width)
        self.attn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:  # x (B, S, E)
        x = self.attn_norm(x + self.attn(x, mask))
        return self.ffn_norm(x + self.fc2(F.relu(self.fc1(x))))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: causal self-attention, encoder-decoder attention, FFN."""

    def __init__(
        self, dim: int, encoder_dim: int, ffn_dim: int, heads: int, width: int,
        ende_heads: int, ende_width: int,
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, width)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.ende_attn = CrossAttention(dim, encoder_dim, ende_heads, ende_width)
        self.ende_attn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)

    def _rest(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        x = self.ende_attn_norm(x + self.ende_attn(x, k, v, mask))
        return self.ffn_norm(x + self.fc2(F.relu(self.fc1(x))))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        x = self.self_attn_norm(x + self.self_attn(x, causal=True))  # (B, T, D)
        return self._rest(x, k, v, mask)

    def step(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None,
        k: Tensor, v: Tensor, mask: Tensor | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        y, self_k, self_v = self.self_attn.step(x, cache)  # x (B, 1, D)
        return self._rest(self.self_attn_norm(x + y), k, v, mask), (self_k, self_v)


# -- the model -------------------------------------------------------------------------


def _gene(config: Mapping[str, Any], name: str) -> int:
    try:
        return int(config[name])
    except KeyError:
        raise ValueError(f"HAT subnet config is missing gene {name!r}") from None


def _embedding(vocab: int, dim: int, pad_index: int) -> nn.Embedding:
    """A token table with HAT's scale (std ``dim ** -0.5``, pad row zero), drawn uniform:
    ``normal_`` on the meta device (used by extraction) imports torch's compiler stack."""
    bound = math.sqrt(3.0 / dim)
    weight = nn.init.uniform_(torch.empty(vocab, dim), -bound, bound)
    with torch.no_grad():
        weight[pad_index] = 0.0
    return nn.Embedding(vocab, dim, padding_idx=pad_index, _weight=weight)


@SUBNET_BUILDERS.register("hat", description="HAT SubTransformer (dense encoder-decoder)")
class HATSubnet(nn.Module):
    """A dense HAT SubTransformer, rebuilt from its JSON config alone.

    Args:
        config: the canonical HAT config dict (gene names as in ``HATDesignSpace``).
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        head_dim: width of one attention head (q/k/v width = heads * head_dim).
        max_positions: the longest source or target sequence.
        pad_index: the padding token.
        qkv_dim: if given, HAT's fixed q/k/v width split into ``heads`` heads instead.

    Raises:
        ValueError: a gene missing from ``config`` or sizes that do not divide.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        src_vocab: int,
        tgt_vocab: int,
        head_dim: int,
        max_positions: int = 64,
        pad_index: int = 0,
        qkv_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.config = {str(k): int(v) for k, v in config.items()}
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.head_dim, self.qkv_dim = head_dim, qkv_dim
        self.max_positions, self.pad_index = max_positions, pad_index
        enc_dim = _gene(config, "encoder.embed_dim")
        dec_dim = _gene(config, "decoder.embed_dim")
        self.encoder_embed = _embedding(src_vocab, enc_dim, pad_index)
        self.decoder_embed = _embedding(tgt_vocab, dec_dim, pad_index)
        self.register_buffer("encoder_positions", sinusoidal_table(max_positions, enc_dim))
        self.register_buffer("decoder_positions", sinusoidal_table(max_positions, dec_dim))
        self.encoder = nn.ModuleList(
            self._encoder_layer(config, i, enc_dim) for i in range(_gene(config, "encoder.layers"))
        )
        self.ende_layers = [
            _gene(config, f"decoder.{i}.ende_layers")
            for i in range(_gene(config, "decoder.layers"))
        ]
        if max(self.ende_layers) > len(self.encoder):
            raise ValueError(
                f"a decoder layer attends to the last {max(self.ende_layers)} encoder layers "
                f"but the encoder has {len(self.encoder)}"
            )
        self.decoder = nn.ModuleList(self._decoder_layer(config, i, enc_dim, dec_dim)
                                     for i in range(len(self.ende_layers)))

    def _width(self, heads: int) -> int:
        width = self.qkv_dim if self.qkv_dim is not None else heads * self.head_dim
        if width % heads:
            raise ValueError(f"qkv_dim={width} is not divisible by heads={heads}")
        return width

    def _encoder_layer(self, config: Mapping[str, Any], i: int, enc_dim: int) -> EncoderLayer:
        heads = _gene(config, f"encoder.{i}.heads")
        return EncoderLayer(
            enc_dim, _gene(config, f"encoder.{i}.ffn_dim"), heads, self._width(heads)
        )

    def _decoder_layer(
        self, config: Mapping[str, Any], i: int, enc_dim: int, dec_dim: int
    ) -> DecoderLayer:
        heads = _gene(config, f"decoder.{i}.heads")
        ende_heads = _gene(config, f"decoder.{i}.ende_heads")
        return DecoderLayer(
            dec_dim, enc_dim, _gene(config, f"decoder.{i}.ffn_dim"),
            heads, self._width(heads), ende_heads, self._width(ende_heads),
        )

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able constructor arguments: ``HATSubnet(**subnet_config())`` rebuilds it."""
        return {
            "config": dict(self.config),
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "head_dim": self.head_dim,
            "max_positions": self.max_positions,
            "pad_index": self.pad_index,
            "qkv_dim": self.qkv_dim,
        }

    # -- forward ---------------------------------------------------------------------

    def _embed(self, tokens: Tensor, embed: nn.Embedding, table: Tensor) -> Tensor:
        scale = math.sqrt(embed.embedding_dim)
        return scale * embed(tokens) + table[token_positions(tokens, self.pad_index)]

    def encode(self, src_tokens: Tensor) -> HATEncoderOut:
        """Run the encoder on src_tokens (B, S)."""
        check_tokens("src_tokens", src_tokens, self.max_positions)
        padding = src_tokens.eq(self.pad_index)  # (B, S)
        mask = attend_mask(padding)
        x = self._embed(src_tokens, self.encoder_embed, self.encoder_positions)  # (B, S, E)
        states: list[Tensor] = []
        for layer in self.encoder:
            x = layer(x, mask)
            states.append(x)
        keep = max(self.ende_layers)
        return HATEncoderOut(tuple(reversed(states[-keep:])), padding)

    def _memories(self, enc: HATEncoderOut) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Per decoder layer: its encoder-decoder keys and values and their mask."""
        out = []
        for layer, count in zip(self.decoder, self.ende_layers):
            memory, padding = ende_memory(enc, count)
            k, v = layer.ende_attn.memory_kv(memory)  # (B, h, k * S, hd)
            out.append((k, v, attend_mask(padding)))
        return out

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, tgt_vocab) for prev_output_tokens (B, T)."""
        check_tokens("prev_output_tokens", prev_output_tokens, self.max_positions)
        memories = self._memories(self.encode(src_tokens))
        x = self._embed(prev_output_tokens, self.decoder_embed, self.decoder_positions)
        for layer, (k, v, mask) in zip(self.decoder, memories):
            x = layer(x, k, v, mask)  # (B, T, D)
        return F.linear(x, self.decoder_embed.weight)  # (B, T, V)

    def decode_step(
        self, token: Tensor, position: int | Tensor,
        memories: list[tuple[Tensor, Tensor, Tensor | None]],
        cache: list[tuple[Tensor, Tensor] | None],
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """One decoding step: logits (B, V) of the token after ``token`` (B, 1) at 1-based
        ``position``, and every decoder layer's self-attention keys/values with this
        position appended (each (B, h_i, t, hd_i): heads and widths follow the layer).

        ``memories`` is :meth:`memories`' output; ``cache`` the previous step's keys and
        values, or None per layer at the first step. ``position`` may be a tensor of
        shape (1,) (a traced graph derives it from the cache's length).
        """
        scale = math.sqrt(self.decoder_embed.embedding_dim)
        x = scale * self.decoder_embed(token) + self.decoder_positions[position]  # (B, 1, D)
        present: list[tuple[Tensor, Tensor]] = []
        for layer, past, (k, v, mask) in zip(self.decoder, cache, memories, strict=True):
            x, kv = layer.step(x, past, k, v, mask)
            present.append(kv)
        return F.linear(x[:, 0], self.decoder_embed.weight), present  # (B, V)

    def memories(self, src_tokens: Tensor) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Encode src_tokens (B, S); per decoder layer its encoder-decoder keys and values
        (B, h_i, k_i * S, hd_i) and their mask: what every decoding step reads."""
        return self._memories(self.encode(src_tokens))

    @torch.no_grad()
    def greedy_decode(
        self, src_tokens: Tensor, *, max_len: int, steps: int | None = None
    ) -> Tensor:
        """Greedy decoding with a key/value cache; returns the tokens (B, n), bos excluded.

        With ``steps`` it decodes exactly that many tokens (a fixed workload for latency
        measurement); else it stops when every row has emitted eos, or at ``max_len``.
        """
        memories = self.memories(src_tokens)
        cache: list[Any] = [None] * len(self.decoder)

        def step(token: Tensor, position: int) -> Tensor:
            logits, cache[:] = self.decode_step(token, position, memories, cache)
            return logits

        return greedy_loop(
            step, src_tokens.shape[0], src_tokens.device, max_len=max_len, steps=steps,
            max_positions=self.max_positions, pad_index=self.pad_index,
        )
