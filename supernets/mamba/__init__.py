"""Mamba-2: a byte-level selective state-space LM in pure PyTorch (family ``mamba-lm``).

- :mod:`.model`: :class:`MambaLM`, whose blocks may be full, have their SSM removed or be
  absent (the structures Mamba-Shedder removes, :mod:`nas.compress._shedder`);
- :mod:`.ssd`: the selective scan, chunked (SSD) and step by step (the test oracle).

Importing this package registers the ``mamba-lm`` dense subnet builder.
"""

from nas.supernets.mamba.model import (
    ABSENT,
    BLOCK_KINDS,
    FAMILY,
    FULL,
    NO_SSM,
    SCANS,
    AbsentBlock,
    GatedRMSNorm,
    Mamba2Mixer,
    MambaBlock,
    MambaLM,
)
from nas.supernets.mamba.ssd import ssd_chunked, ssd_recurrent

__all__ = [
    "ABSENT",
    "BLOCK_KINDS",
    "FAMILY",
    "FULL",
    "NO_SSM",
    "SCANS",
    "AbsentBlock",
    "GatedRMSNorm",
    "Mamba2Mixer",
    "MambaBlock",
    "MambaLM",
    "ssd_chunked",
    "ssd_recurrent",
]
