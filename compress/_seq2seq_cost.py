"""What a pruning target measures for a :class:`DenseSeq2Seq`: parameters, MACs, or the
latency HAT's device models predict (``rpi4``, ``xeon``, ``titanxp``) or a user's target
fitted on HAT subnets (``nas hw add``).

A HAT device's latency is priced from the layer shapes (:class:`Seq2SeqShape`) for the
task's workload, as the search prices a subnet, so a pruned model is held to the same
device model as the front it came from. Pruned blocks have query/key and value widths of
their own; the shape's one q/k/v width per attention is their mean, which gives exactly
the model's MACs (every term is linear in the two widths: ``e*Q + e*Q + e*V + V*e`` for
the projections, ``S*S*(Q + V)`` for the products), and the per-layer overheads see only
layer counts, which pruning keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nas._task import Task, Workload
from nas.compress._cost import Cost
from nas.compress._seq2seq import seq2seq_param_count
from nas.hardware._macs import (
    DENSE_HAT_DECODING,
    DecoderLayerDims,
    EncoderLayerDims,
    Seq2SeqShape,
    seq2seq_macs,
)

__all__ = [
    "SEQ2SEQ_PARAMS", "ShapePricer", "hat_latency_cost", "seq2seq_macs_cost", "seq2seq_shape",
]

class ShapePricer(Protocol):
    """A target that prices encoder-decoder layer shapes (``HATLatencyTarget``,
    ``UserTarget`` fitted on HAT subnets)."""

    name: str

    def shape_latency_ms(self, shape: Seq2SeqShape, task: Task) -> float: ...


SEQ2SEQ_PARAMS = Cost("params", "params", seq2seq_param_count)


def _mean_width(heads: int, qk: int, v: int) -> float:
    return heads * (qk + v) / 2


def seq2seq_shape(config: Mapping[str, Any]) -> Seq2SeqShape:
    """The HAT latency models' view of ``DenseSeq2Seq(**config)``."""
    e, d = config["encoder_dim"], config["decoder_dim"]
    encoder = tuple(EncoderLayerDims(embed_dim=e, ffn_dim=s["ffn_dim"],
                                     qkv_dim=_mean_width(s["heads"], s["qk_dim"], s["v_dim"]))
                    for s in config["encoder_layers"])
    decoder = tuple(DecoderLayerDims(
        embed_dim=d, ffn_dim=s["ffn_dim"],
        qkv_dim=_mean_width(s["heads"], s["qk_dim"], s["v_dim"]),
        cross_qkv_dim=_mean_width(s["cross_heads"], s["cross_qk_dim"], s["cross_v_dim"]),
        ende_layers=s["ende_layers"], encoder_embed_dim=e) for s in config["decoder_layers"])
    return Seq2SeqShape(encoder=encoder, decoder=decoder, decoder_embed_dim=d,
                        tgt_vocab=config["tgt_vocab"])


def hat_latency_cost(target: ShapePricer, task: Task) -> Cost:
    """Latency on ``target`` for ``task``'s workload, ms, as the target prices a HAT
    subnet: a HAT device model, or a user's target fitted on HAT subnets."""
    return Cost(f"latency on {target.name}", "ms",
                lambda config: target.shape_latency_ms(seq2seq_shape(config), task))


def seq2seq_macs_cost(workload: Workload) -> Cost:
    """Multiply-accumulates of one inference of ``workload`` (greedy, a key/value cache)."""
    return Cost("MACs per inference", "MACs", lambda config: seq2seq_macs(
        seq2seq_shape(config), workload, DENSE_HAT_DECODING).total)
