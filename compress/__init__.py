"""Compression methods that produce deployable models without a supernet.

- :mod:`._transformer`: ``DenseTransformer``, a dense transformer (post-LN encoder or
  pre-LN causal decoder) whose blocks each have their own heads, query/key and value
  widths and FFN width (subnet family ``transformer``, so a compressed model exports and
  reloads like any subnet).
- :mod:`._seq2seq`: ``DenseSeq2Seq``, the encoder-decoder counterpart (two widths,
  cross-attention; subnet family ``transformer-seq2seq``), with its structures
  (:mod:`._seq2seq_structures`) and costs, HAT's device models among them
  (:mod:`._seq2seq_cost`).
- :mod:`._convert`: MiniLM and our MatFormer and FlexiBERT subnets as ``DenseTransformer``,
  HAT subnets as ``DenseSeq2Seq``.
- :mod:`._structures`, :mod:`._saliency`, :mod:`._prune`: global structural pruning with
  Hessian-aware saliency (NViT, Yang et al., CVPR 2023).
- :mod:`._cost`, :mod:`._latency`: what a pruning budget counts (parameters, MACs, latency
  from a model calibrated on the device).
- :mod:`._subclone`: weight subcloning (Samragh et al., 2023).
- :mod:`._experts`: expert merging of a mixture of experts, Sub-MoE (Li et al., 2025)
  and its baselines (frequency pruning, M-SMoE averaging, HC-SMoE, NAEE).
- :mod:`._shedder`: Mamba-Shedder (Munoz et al., NAACL 2025), removing Mamba blocks
  and SSM modules greedily by calibration loss, with optional recovery.
- :mod:`._sentence_data`, :mod:`._task_data`, :mod:`._jobs`: the data and the jobs behind
  ``nas compress``.
"""

from nas.compress._convert import bert_from_minilm, seq2seq_from_hat, to_transformer
from nas.compress._cost import ENCODER_PARAMS, PARAMS, Cost, latency_cost, macs_cost
from nas.compress._experts import list_merge_methods, merge_experts
from nas.compress._latency import (
    Calibration,
    TransformerLatencyModel,
    calibrate,
    measure_ms,
    transformer_macs,
)
from nas.compress._prune import PruneStep, count_params, prune, prune_once, savings
from nas.compress._saliency import magnitude, random_probe_loss, saliency
from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._seq2seq_cost import hat_latency_cost
from nas.compress._shedder import ShedResult, recover, shed
from nas.compress._structures import Structure, StructureIndex, structures
from nas.compress._subclone import RANKINGS, Importance, drop_blocks, measure_importance, subclone
from nas.compress._transformer import DenseTransformer, Keep, param_count, shrink

__all__ = [
    "ENCODER_PARAMS",
    "PARAMS",
    "RANKINGS",
    "Calibration",
    "Cost",
    "DenseSeq2Seq",
    "DenseTransformer",
    "Importance",
    "Keep",
    "PruneStep",
    "ShedResult",
    "Structure",
    "StructureIndex",
    "TransformerLatencyModel",
    "bert_from_minilm",
    "calibrate",
    "count_params",
    "drop_blocks",
    "hat_latency_cost",
    "latency_cost",
    "list_merge_methods",
    "macs_cost",
    "magnitude",
    "measure_importance",
    "measure_ms",
    "merge_experts",
    "param_count",
    "prune",
    "prune_once",
    "random_probe_loss",
    "recover",
    "saliency",
    "savings",
    "seq2seq_from_hat",
    "shed",
    "shrink",
    "structures",
    "subclone",
    "to_transformer",
    "transformer_macs",
]
