"""Compression methods that produce deployable models without a supernet.

- :mod:`._bert`: ``BertEncoder``, a dense BERT encoder whose blocks each have their own
  heads, query/key and value widths and FFN width (registered as subnet family ``bert``,
  so a compressed model exports and reloads like any subnet); ``bert_from_minilm``.
- :mod:`._structures`, :mod:`._saliency`, :mod:`._prune`: global structural pruning with
  Hessian-aware saliency (NViT, Yang et al., CVPR 2023).
- :mod:`._subclone`: weight subcloning (Samragh et al., 2023).
- :mod:`._sentence_data`, :mod:`._jobs`: the data and the jobs behind ``nas compress``.
"""

from nas.compress._bert import BertEncoder, Keep, bert_from_minilm, shrink
from nas.compress._prune import PruneStep, count_params, prune, prune_once
from nas.compress._saliency import magnitude, random_probe_loss, saliency
from nas.compress._structures import Structure, StructureIndex, structures
from nas.compress._subclone import RANKINGS, Importance, drop_blocks, measure_importance, subclone

__all__ = [
    "RANKINGS",
    "Importance",
    "drop_blocks",
    "measure_importance",
    "subclone",
    "BertEncoder",
    "Keep",
    "PruneStep",
    "Structure",
    "StructureIndex",
    "bert_from_minilm",
    "count_params",
    "magnitude",
    "prune",
    "prune_once",
    "random_probe_loss",
    "saliency",
    "shrink",
    "structures",
]
