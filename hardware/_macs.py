"""Analytic multiply-accumulate (MAC) counts of one encoder-decoder Transformer inference.

Latency models need MACs from layer shapes and a workload alone, without building a
model: that is what lets coefficients fitted on HAT's WMT measurements (30-token
sentences, beam 5, a 32k vocabulary) be applied to another workload (a G2P word,
greedy decoding, 73 phonemes). MACs are linear in every per-layer width, so a layer
stack given by its *mean* widths (HAT's latency features) has the same MAC count as
the real stack: dims are floats on purpose.

Conventions: one MAC is one multiply-add of a dense projection or of an attention
product (query-key scores and the weighted sum of values). Biases, layer norms,
softmax, activations and embeddings are not counted; their cost is per-operation
overhead, which the latency models price separately.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas._supernet import SubnetShape
from nas._task import Workload


@dataclass(frozen=True)
class EncoderLayerDims:
    """One encoder layer: model width, FFN hidden width, q/k/v projection width."""

    embed_dim: float
    ffn_dim: float
    qkv_dim: float


@dataclass(frozen=True)
class DecoderLayerDims:
    """One decoder layer.

    ``cross_qkv_dim`` is the width of the encoder-decoder attention's projections;
    ``ende_layers`` is how many of the last encoder layers it attends to (HAT's
    arbitrary encoder-decoder attention: keys and values over ``ende_layers * src_len``
    positions); ``encoder_embed_dim`` is the width of the encoder outputs it projects.
    """

    embed_dim: float
    ffn_dim: float
    qkv_dim: float
    cross_qkv_dim: float
    ende_layers: float
    encoder_embed_dim: float


@dataclass(frozen=True)
class Seq2SeqShape:
    """The per-layer widths of an encoder-decoder Transformer and its output vocabulary."""

    encoder: tuple[EncoderLayerDims, ...]
    decoder: tuple[DecoderLayerDims, ...]
    decoder_embed_dim: float
    tgt_vocab: float

    def __post_init__(self) -> None:
        if not self.encoder or not self.decoder:
            raise ValueError(
                f"a seq2seq shape needs at least one encoder and one decoder layer, got "
                f"{len(self.encoder)} and {len(self.decoder)}"
            )

    @property
    def encoder_layers(self) -> int:
        return len(self.encoder)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Seq2SeqShape:
        """Inverse of :meth:`to_dict` (shapes recorded in JSON)."""
        return cls(
            encoder=tuple(EncoderLayerDims(**d) for d in data["encoder"]),
            decoder=tuple(DecoderLayerDims(**d) for d in data["decoder"]),
            decoder_embed_dim=float(data["decoder_embed_dim"]),
            tgt_vocab=float(data["tgt_vocab"]),
        )

    @classmethod
    def from_subnet(cls, shape: SubnetShape) -> Seq2SeqShape:
        """Read a HAT-family :class:`~nas.SubnetShape` (what ``describe()`` returns).

        The q/k/v width is the layer's ``qkv_dim`` (``ende_qkv_dim`` for the
        encoder-decoder attention) where given, else ``heads * head_dim`` (our HAT
        layers' default; HAT's own fairseq code fixes it at 512 instead).

        Raises:
            ValueError: the shape is not of the HAT family or lacks a needed size.
        """
        if shape.family != "hat":
            raise ValueError(
                f"the HAT latency models cover encoder-decoder Transformers of family 'hat', "
                f"got a subnet of family {shape.family!r}; measure it instead with --hw "
                "local-cpu, cuda or remote:HOST:PORT"
            )
        encoder: list[EncoderLayerDims] = []
        decoder: list[DecoderLayerDims] = []
        for layer in shape.layers:
            d = layer.dims
            if layer.kind == "encoder":
                encoder.append(EncoderLayerDims(
                    embed_dim=_dim(d, "embed_dim"),
                    ffn_dim=_dim(d, "ffn_dim"),
                    qkv_dim=_width(d, "qkv_dim", "heads"),
                ))
            elif layer.kind == "decoder":
                decoder.append(DecoderLayerDims(
                    embed_dim=_dim(d, "embed_dim"),
                    ffn_dim=_dim(d, "ffn_dim"),
                    qkv_dim=_width(d, "qkv_dim", "heads"),
                    cross_qkv_dim=_width(d, "ende_qkv_dim", "ende_heads"),
                    ende_layers=_dim(d, "ende_layers"),
                    encoder_embed_dim=_dim(d, "encoder_embed_dim"),
                ))
            else:
                raise ValueError(
                    f"layer kind must be 'encoder' or 'decoder' in a HAT subnet, got {layer.kind!r}"
                )
        return cls(
            encoder=tuple(encoder),
            decoder=tuple(decoder),
            decoder_embed_dim=_dim(shape.dims, "decoder_embed_dim"),
            tgt_vocab=_dim(shape.dims, "tgt_vocab"),
        )


def _width(dims: Mapping[str, int | float], key: str, heads_key: str) -> float:
    """A q/k/v width: given outright, or heads times the head width."""
    if key in dims:
        return float(dims[key])
    return _dim(dims, heads_key) * _dim(dims, "head_dim")


def _dim(dims: Mapping[str, int | float], key: str) -> float:
    try:
        return float(dims[key])
    except KeyError:
        raise ValueError(f"subnet shape lacks the size {key!r}; it has {sorted(dims)}") from None


@dataclass(frozen=True)
class DecodingScheme:
    """How an implementation runs autoregressive decoding, which decides its MACs.

    Attributes:
        cached_self_attention: each step feeds only the newest token and attends to
            cached keys and values (fairseq's ``incremental_state``); otherwise every
            step re-runs the decoder over the whole prefix.
        cross_kv_once: the encoder-decoder attention's key/value projections of the
            encoder output are computed once per inference (fairseq's ``static_kv``);
            otherwise at every step.
        cross_kv_per_hypothesis: those projections run on the encoder output copied
            once per hypothesis (fairseq reorders the encoder output to the beam before
            decoding); otherwise once per sentence.
        logits_last_only: without a self-attention cache, only the newest position is
            projected to the vocabulary (with a cache it always is).
    """

    cached_self_attention: bool = True
    cross_kv_once: bool = True
    cross_kv_per_hypothesis: bool = True
    logits_last_only: bool = True


FAIRSEQ_INCREMENTAL = DecodingScheme()
"""HAT's measurement code (``latency_dataset.py``): ``model.decoder(...)`` called once per
step with an ``incremental_state``, encoder output reordered to the beam beforehand."""

DENSE_HAT_DECODING = DecodingScheme(cross_kv_per_hypothesis=False)
"""Our dense HAT model's ``greedy_decode`` (``nas.supernets.hat._dense``): a key/value
cache for past target positions, encoder-decoder keys/values computed once per sentence
before the first step, logits of the newest position only."""


@dataclass(frozen=True)
class MacCount:
    """MACs of one inference: encoder pass, and all decoder steps together."""

    encoder: float
    decoder: float
    steps: float

    @property
    def decoder_per_step(self) -> float:
        return self.decoder / self.steps if self.steps else 0.0

    @property
    def total(self) -> float:
        return self.encoder + self.decoder


def encoder_macs(shape: Seq2SeqShape, workload: Workload) -> float:
    """MACs of the encoder over ``src_len`` tokens, ``batch`` sentences (not beam-expanded:
    the encoder runs once per sentence)."""
    s, b = workload.src_len, workload.batch
    total = 0.0
    for layer in shape.encoder:
        e, f, q = layer.embed_dim, layer.ffn_dim, layer.qkv_dim
        projections = s * (3 * e * q + q * e + 2 * e * f)  # q,k,v in; out; FFN up, down
        attention = 2 * s * s * q  # scores and weighted sum over all positions
        total += b * (projections + attention)
    return total


def decoder_macs(
    shape: Seq2SeqShape, workload: Workload, scheme: DecodingScheme = FAIRSEQ_INCREMENTAL
) -> float:
    """MACs of ``tgt_len`` autoregressive decoder steps for ``batch * beam`` hypotheses,
    the output projection over the vocabulary included.

    Sums over steps ``t = 1..T`` use the closed forms of ``sum 1``, ``sum t`` and
    ``sum t^2`` so that a mean (fractional) ``tgt_len`` is allowed.
    """
    s, t_len = workload.src_len, workload.tgt_len
    hyps = workload.batch * workload.beam
    sum_1 = t_len
    sum_t = t_len * (t_len + 1) / 2
    sum_t2 = t_len * (t_len + 1) * (2 * t_len + 1) / 6
    # Positions run through the layers over all steps, and query-key pairs of self-attention.
    if scheme.cached_self_attention:
        positions, self_pairs = sum_1, sum_t
    else:
        positions, self_pairs = sum_t, sum_t2
    total = 0.0
    for layer in shape.decoder:
        e, f, q, qc = layer.embed_dim, layer.ffn_dim, layer.qkv_dim, layer.cross_qkv_dim
        memory = s * layer.ende_layers  # encoder positions attended
        per_position = 3 * e * q + q * e + e * qc + qc * e + 2 * e * f
        attention = 2 * q * self_pairs + 2 * qc * memory * positions
        total += hyps * (per_position * positions + attention)
        kv_rows = (hyps if scheme.cross_kv_per_hypothesis else workload.batch) * memory
        kv_runs = 1.0 if scheme.cross_kv_once else sum_1
        total += kv_runs * kv_rows * 2 * layer.encoder_embed_dim * qc
    logit_positions = sum_1 if scheme.cached_self_attention or scheme.logits_last_only else sum_t
    total += hyps * logit_positions * shape.decoder_embed_dim * shape.tgt_vocab
    return total


def seq2seq_macs(
    shape: Seq2SeqShape, workload: Workload, scheme: DecodingScheme = FAIRSEQ_INCREMENTAL
) -> MacCount:
    """Encoder and decoder MACs of one inference of ``workload``."""
    return MacCount(
        encoder=encoder_macs(shape, workload),
        decoder=decoder_macs(shape, workload, scheme),
        steps=workload.tgt_len,
    )
