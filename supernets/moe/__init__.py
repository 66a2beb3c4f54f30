"""A Mixtral-style mixture-of-experts decoder LM (export family ``moe-lm``).

Importing this package registers :class:`MoELM` in :data:`nas.SUBNET_BUILDERS`, so an
exported (possibly merged) model reloads with ``load_subnet``. Expert merging lives in
:mod:`nas.compress._experts`.
"""

from nas.supernets.moe.model import (
    FAMILY,
    ExpertFFN,
    LayerStats,
    MoELM,
    SparseMoE,
    collect_moe_stats,
    upcycle,
)

__all__ = ["FAMILY", "ExpertFFN", "LayerStats", "MoELM", "SparseMoE", "collect_moe_stats",
           "upcycle"]
