"""HAT's SuperTransformer: a weight-sharing encoder-decoder transformer.

Wang et al., "HAT: Hardware-Aware Transformers for Efficient Natural Language
Processing", ACL 2020 (https://arxiv.org/abs/2005.14187). One SuperTransformer holds the
largest size of every dimension; a SubTransformer runs on the leading slices of its
weights: elastic encoder/decoder embedding dims, per-layer FFN dims and head counts,
elastic layer counts, per-decoder-layer encoder-decoder heads and "arbitrary
encoder-decoder attention" over the last 1-3 encoder layers. Training samples subnets
(random, largest and smallest) so that every slice learns; ``extract`` copies one subnet
into the dense :class:`~nas.supernets.hat._dense.HATSubnet`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._space import Config
from nas._supernet import LayerShape, QuantUnit, SubnetShape, Supernet
from nas.supernets.hat._dense import (
    HATEncoderOut,
    HATSubnet,
    attend_mask,
    check_tokens,
    ende_memory,
    greedy_loop,
    sinusoidal_table,
    token_positions,
)
from nas.supernets.hat._deploy import DecodingGraphs, decoding_graphs
from nas.supernets.hat._layers import (
    DecoderLayerSizes,
    EncoderLayerSizes,
    State,
    SuperDecoderLayer,
    SuperEmbedding,
    SuperEncoderLayer,
)
from nas.supernets.hat._space import HATDesignSpace

__all__ = ["DecodingGraphs", "HATSuperTransformer", "HATSubnet", "decoding_graphs"]


_QUANT_PARTS = {
    "encoder": {"attn": ("attn",), "ffn": ("fc1", "fc2")},
    "decoder": {"self_attn": ("self_attn",), "ende_attn": ("ende_attn",), "ffn": ("fc1", "fc2")},
}
"""Quantization units of a layer -> the dense layer's modules they cover."""


@dataclass(frozen=True)
class _ActiveSizes:
    """The sizes of the activated subnet, read by every forward pass."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder: tuple[EncoderLayerSizes, ...]
    decoder: tuple[DecoderLayerSizes, ...]


class HATSuperTransformer(Supernet):
    """HAT's weight-sharing SuperTransformer over a :class:`HATDesignSpace`.

    Post-norm layers, ReLU FFNs, fairseq sinusoidal positions (computed at the largest
    embedding dim, sliced per subnet), embeddings scaled by ``sqrt(embed_dim)``, the
    output projection tied to the decoder's input embedding, dropout scaled by
    ``embed_dim / max_embed_dim`` as HAT does. The largest subnet is active after
    construction.

    Args:
        design: the design space; ``self.space = design.build()``.
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        max_positions: the longest source or target sequence.
        dropout: residual dropout of the largest subnet.
        pad_index: the padding token (the task uses 0 = pad, 1 = bos, 2 = eos, 3 = unk).
        attention_dropout: dropout on attention weights (HAT's WMT recipe: 0.1).
        qkv_dim: ``None`` (default) makes q/k/v ``heads * head_dim`` wide, as
            ``HATDesignSpace`` documents; an int fixes the q/k/v width and splits it into
            ``heads`` heads, exactly as HAT's ``--qkv-dim`` (512 for WMT).
        share_all_embeddings: one table for source, target and output (HAT's WMT
            setting, needs a joined vocabulary and equal largest embedding dims).

    Raises:
        ValueError: sizes out of range or incompatible options.
    """

    family = "hat"

    def __init__(
        self,
        design: HATDesignSpace,
        *,
        src_vocab: int,
        tgt_vocab: int,
        max_positions: int = 64,
        dropout: float = 0.1,
        pad_index: int = 0,
        attention_dropout: float = 0.0,
        qkv_dim: int | None = None,
        share_all_embeddings: bool = False,
    ) -> None:
        super().__init__()
        _validate(design, src_vocab, tgt_vocab, max_positions, dropout, attention_dropout,
                  pad_index, qkv_dim, share_all_embeddings)
        self.design = design
        self.space = design.build()
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.max_positions, self.pad_index = max_positions, pad_index
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.qkv_dim, self.share_all_embeddings = qkv_dim, share_all_embeddings
        enc_dim, dec_dim = max(design.encoder_embed_dim), max(design.decoder_embed_dim)
        self.encoder_embed = SuperEmbedding(src_vocab, enc_dim, pad_index)
        self.decoder_embed = (
            self.encoder_embed if share_all_embeddings
            else SuperEmbedding(tgt_vocab, dec_dim, pad_index)
        )
        self.register_buffer(
            "encoder_positions", sinusoidal_table(max_positions, enc_dim), persistent=False
        )
        self.register_buffer(
            "decoder_positions", sinusoidal_table(max_positions, dec_dim), persistent=False
        )
        self.encoder_layers = nn.ModuleList(
            SuperEncoderLayer(
                enc_dim, max(design.encoder_ffn_dim), self._width(max(design.encoder_heads)),
                attention_dropout=attention_dropout,
            )
            for _ in range(design.max_encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            SuperDecoderLayer(
                dec_dim, enc_dim, max(design.decoder_ffn_dim),
                self._width(max(design.decoder_heads)),
                self._width(max(design.decoder_ende_heads)),
                attention_dropout=attention_dropout,
            )
            for _ in range(design.max_decoder_layers)
        )
        self._sizes: _ActiveSizes
        self.activate(self.space.largest())

    # -- the Supernet hooks ------------------------------------------------------------

    def _width(self, heads: int) -> int:
        return self.qkv_dim if self.qkv_dim is not None else heads * self.design.head_dim

    def _sizes_of(self, config: Config) -> _ActiveSizes:
        c = config.to_dict()
        encoder = tuple(
            EncoderLayerSizes(
                ffn_dim=int(c[f"encoder.{i}.ffn_dim"]), heads=int(c[f"encoder.{i}.heads"]),
                width=self._width(int(c[f"encoder.{i}.heads"])),
            )
            for i in range(int(c["encoder.layers"]))
        )
        decoder = tuple(
            DecoderLayerSizes(
                ffn_dim=int(c[f"decoder.{i}.ffn_dim"]), heads=int(c[f"decoder.{i}.heads"]),
                width=self._width(int(c[f"decoder.{i}.heads"])),
                ende_heads=int(c[f"decoder.{i}.ende_heads"]),
                ende_width=self._width(int(c[f"decoder.{i}.ende_heads"])),
                ende_layers=int(c[f"decoder.{i}.ende_layers"]),
            )
            for i in range(int(c["decoder.layers"]))
        )
        return _ActiveSizes(int(c["encoder.embed_dim"]), int(c["decoder.embed_dim"]),
                            encoder, decoder)

    def _activate(self, config: Config) -> None:
        self._sizes = self._sizes_of(config)

    def _extract(self, config: Config) -> HATSubnet:
        """Copy the subnet's slices into a dense model, on the supernet's device/dtype."""
        with torch.device("meta"):
            dense = HATSubnet(**self._subnet_config(config))
        dense.load_state_dict(self._dense_state(self._sizes_of(config)), strict=True, assign=True)
        return dense.train(self.training)

    def _describe(self, config: Config) -> SubnetShape:
        s = self._sizes_of(config)
        enc, dec = s.encoder_embed_dim, s.decoder_embed_dim
        layers = [
            LayerShape("encoder", {
                "embed_dim": enc, "ffn_dim": e.ffn_dim, "heads": e.heads,
                "head_dim": e.width // e.heads, "qkv_dim": e.width,
            })
            for e in s.encoder
        ] + [
            LayerShape("decoder", {
                "embed_dim": dec, "ffn_dim": d.ffn_dim, "heads": d.heads,
                "ende_heads": d.ende_heads, "ende_layers": d.ende_layers,
                "encoder_embed_dim": enc, "head_dim": d.width // d.heads,
                "qkv_dim": d.width, "ende_qkv_dim": d.ende_width,
            })
            for d in s.decoder
        ]
        dims = {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab,
                "encoder_embed_dim": enc, "decoder_embed_dim": dec}
        return SubnetShape(family=self.family, layers=tuple(layers), dims=dims)

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Per encoder layer its self-attention and FFN; per decoder layer its
        self-attention, encoder-decoder attention and FFN."""
        units = []
        for side, layers in (("encoder", self.encoder_layers), ("decoder", self.decoder_layers)):
            for i in range(len(layers)):
                when = self.space.gene(f"{side}.{i}.ffn_dim").active_if
                units += [QuantUnit(f"{side}.{i}.{part}", when) for part in _QUANT_PARTS[side]]
        return tuple(units)

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {
            f"{side}.{i}.{part}": tuple(f"{side}.{i}.{m}" for m in modules)
            for side, parts in _QUANT_PARTS.items()
            for i in range(int(config[f"{side}.layers"]))
            for part, modules in parts.items()
        }

    def _architecture(self) -> dict[str, Any]:
        return {
            "design": self.design.to_dict(),
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "max_positions": self.max_positions,
            "dropout": self.dropout,
            "pad_index": self.pad_index,
            "attention_dropout": self.attention_dropout,
            "qkv_dim": self.qkv_dim,
            "share_all_embeddings": self.share_all_embeddings,
        }

    @classmethod
    def from_architecture(cls, architecture: Mapping[str, Any]) -> HATSuperTransformer:
        """Rebuild an (untrained) supernet from :meth:`architecture`'s dict."""
        args = dict(architecture)
        design = HATDesignSpace.from_dict(args.pop("design"))
        return cls(design, **args)

    # -- extraction helpers ------------------------------------------------------------

    def _subnet_config(self, config: Config) -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "head_dim": self.design.head_dim,
            "max_positions": self.max_positions,
            "pad_index": self.pad_index,
            "qkv_dim": self.qkv_dim,
        }

    def _dense_state(self, s: _ActiveSizes) -> State:
        """HATSubnet's state dict: cloned, contiguous slices of the super weights."""
        enc, dec = s.encoder_embed_dim, s.decoder_embed_dim
        state: State = {
            "encoder_embed.weight": self.encoder_embed.table(enc).detach().clone(),
            "decoder_embed.weight": self.decoder_embed.table(dec).detach().clone(),
            "encoder_positions": self.encoder_positions[:, :enc].clone(),
            "decoder_positions": self.decoder_positions[:, :dec].clone(),
        }
        for i, (layer, sizes) in enumerate(zip(self.encoder_layers, s.encoder)):
            state.update({f"encoder.{i}.{k}": t for k, t in layer.export(enc, sizes).items()})
        for i, (layer, sizes) in enumerate(zip(self.decoder_layers, s.decoder)):
            state.update(
                {f"decoder.{i}.{k}": t for k, t in layer.export(dec, enc, sizes).items()}
            )
        return state

    # -- running the active subnet -----------------------------------------------------

    def _layer_dropout(self, dim: int, max_dim: int) -> float:
        """HAT's ``calc_dropout``: smaller subnets get proportionally less dropout."""
        return self.dropout * dim / max_dim

    def _embed(self, tokens: Tensor, embed: SuperEmbedding, table: Tensor, dim: int) -> Tensor:
        x = math.sqrt(dim) * embed(tokens, dim)  # (B, T, dim)
        return x + table[token_positions(tokens, self.pad_index), :dim]

    def encode(self, src_tokens: Tensor) -> HATEncoderOut:
        """Run the active subnet's encoder on src_tokens (B, S)."""
        check_tokens("src_tokens", src_tokens, self.max_positions)
        s = self._sizes
        dim = s.encoder_embed_dim
        drop = self._layer_dropout(dim, max(self.design.encoder_embed_dim))
        padding = src_tokens.eq(self.pad_index)  # (B, S)
        mask = attend_mask(padding)
        x = self._embed(src_tokens, self.encoder_embed, self.encoder_positions, dim)
        x = F.dropout(x, drop, self.training)  # (B, S, E)
        states: list[Tensor] = []
        for layer, sizes in zip(self.encoder_layers, s.encoder):
            x = layer(x, sizes, mask, drop)
            states.append(x)
        keep = max(d.ende_layers for d in s.decoder)
        return HATEncoderOut(tuple(reversed(states[-keep:])), padding)

    def _memories(self, enc: HATEncoderOut) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Per active decoder layer: encoder-decoder keys, values (B, h, k * S, hd), mask."""
        out = []
        for layer, sizes in zip(self.decoder_layers, self._sizes.decoder):
            memory, padding = ende_memory(enc, sizes.ende_layers)
            k, v = layer.ende_attn.kv(memory, sizes.ende_heads, sizes.ende_width)
            out.append((k, v, attend_mask(padding)))
        return out

    def _decoder_dropout(self) -> float:
        return self._layer_dropout(self._sizes.decoder_embed_dim,
                                   max(self.design.decoder_embed_dim))

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, tgt_vocab) of the active subnet."""
        check_tokens("prev_output_tokens", prev_output_tokens, self.max_positions)
        memories = self._memories(self.encode(src_tokens))
        dim, drop = self._sizes.decoder_embed_dim, self._decoder_dropout()
        x = self._embed(prev_output_tokens, self.decoder_embed, self.decoder_positions, dim)
        x = F.dropout(x, drop, self.training)  # (B, T, D)
        for layer, sizes, (k, v, mask) in zip(self.decoder_layers, self._sizes.decoder, memories):
            x = layer(x, k, v, mask, sizes, drop)
        return F.linear(x, self.decoder_embed.table(dim))  # (B, T, V)

    @torch.no_grad()
    def greedy_decode(
        self, src_tokens: Tensor, *, max_len: int, steps: int | None = None
    ) -> Tensor:
        """Greedy decoding of the active subnet with a key/value cache; tokens (B, n).

        Same contract as :meth:`HATSubnet.greedy_decode`, and the same tokens.
        """
        memories = self._memories(self.encode(src_tokens))
        dim, drop = self._sizes.decoder_embed_dim, self._decoder_dropout()
        layers = list(zip(self.decoder_layers, self._sizes.decoder, memories))
        cache: list[tuple[Tensor, Tensor] | None] = [None] * len(layers)
        table = self.decoder_embed.table(dim)  # (V, D)

        def step(token: Tensor, position: int) -> Tensor:
            x = math.sqrt(dim) * self.decoder_embed(token, dim)
            x = x + self.decoder_positions[position, :dim]  # (B, 1, D)
            for i, (layer, sizes, (k, v, mask)) in enumerate(layers):
                x, cache[i] = layer.step(x, cache[i], k, v, mask, sizes, drop)
            return F.linear(x[:, 0], table)  # (B, V)

        return greedy_loop(
            step, src_tokens.shape[0], src_tokens.device, max_len=max_len, steps=steps,
            max_positions=self.max_positions, pad_index=self.pad_index,
        )


def _validate(
    design: HATDesignSpace, src_vocab: int, tgt_vocab: int, max_positions: int,
    dropout: float, attention_dropout: float, pad_index: int, qkv_dim: int | None,
    share_all_embeddings: bool,
) -> None:
    """Check the constructor arguments, naming the bad one."""
    if not isinstance(design, HATDesignSpace):
        raise TypeError(f"design must be a HATDesignSpace, got {type(design).__name__}")
    for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab),
                        ("max_positions", max_positions)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if not 0 <= pad_index < min(src_vocab, tgt_vocab):
        raise ValueError(
            f"pad_index must be in [0, {min(src_vocab, tgt_vocab)}), got {pad_index!r}"
        )
    if qkv_dim is not None:
        heads = {*design.encoder_heads, *design.decoder_heads, *design.decoder_ende_heads}
        bad = sorted(h for h in heads if qkv_dim % h)
        if qkv_dim < 1 or bad:
            raise ValueError(f"qkv_dim must be a positive multiple of every head count "
                             f"{sorted(heads)}, got {qkv_dim!r}")
    if share_all_embeddings and (
        src_vocab != tgt_vocab or max(design.encoder_embed_dim) != max(design.decoder_embed_dim)
    ):
        raise ValueError(
            "share_all_embeddings needs src_vocab == tgt_vocab and equal largest encoder and "
            f"decoder embed dims, got vocabs {src_vocab}/{tgt_vocab} and dims "
            f"{max(design.encoder_embed_dim)}/{max(design.decoder_embed_dim)}"
        )
