"""Published latencies of NAS-Bench-201 cells: ``pixel3``, ``gold6226``, ``nb201-raspi4``,
``nb201-titanxp`` and ``nb201-1080ti`` (the ``nb201-`` prefix keeps them apart from the
HAT models ``rpi4`` and ``titanxp``). They also serve as the few-shot prior of a user's
own device (``nas hw add --supernet nb201``).

Every one of the 15,625 NAS-Bench-201 cells has been measured on these devices; the
shipped NB201 table (``nas.supernets`` ``data/nb201_cifar_latency.csv``, provenance in
``data/PROVENANCE.md`` beside it) holds the figures, from HELP's
``data/nasbench201`` (Lee et al., NeurIPS 2021; Pixel 3 is also one of HW-NAS-Bench's
devices, Li et al., ICLR 2021). A target answers the figure of the cell by lookup: no
model and no model error, only whatever noise the original measurement had. The table
is found through the core's tabular registry, so this module imports no supernet.
"""

from __future__ import annotations

import functools

from nas._evaluator import BaseEvaluator
from nas._hardware import HARDWARE, HardwareTarget, Provenance
from nas._space import Config
from nas._supernet import Supernet
from nas._tabular import TabularBenchmark, get_table
from nas._task import Task

__all__ = ["DEVICES", "NB201TableTarget", "SUPERNET_FAMILY"]

SUPERNET_FAMILY = "nb201"
"""The only supernet family whose subnets the table holds."""
TABLE = "nb201"
PROVENANCE_FILE = "supernets/data/PROVENANCE.md"


@functools.lru_cache(maxsize=1)
def _table() -> TabularBenchmark:
    return get_table(TABLE)


class NB201TableTarget(HardwareTarget):
    """A device of the NB201 table: the published latency of a NAS-Bench-201 cell.

    Figures are ms as the source published them for the benchmark's CIFAR network
    (its runtime and batch size on that device); the task's workload plays no part.

    Args:
        name: the target's registry name.
        device: the table's latency column, without ``lat_`` (``pixel3``).
        description: the device in words.
    """

    def __init__(self, *, name: str, device: str, description: str) -> None:
        self.name = name
        self.device = device
        self.description = description

    @functools.cached_property
    def _lookup(self) -> BaseEvaluator:
        """The table's lookup of (accuracy, latency on this device), cached per cell."""
        return _table().evaluator(self.device)

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        family = getattr(supernet, "family", type(supernet).__name__)
        if family != SUPERNET_FAMILY:
            raise ValueError(f"hardware target {self.name!r} covers only the "
                             f"{SUPERNET_FAMILY!r} supernet (NAS-Bench-201 cells), got "
                             f"supernet family {family!r}; measure it instead with --hw "
                             "local-cpu, cuda or remote:HOST:PORT")
        return self._lookup.evaluate(config)["latency_ms"]

    def provenance(self) -> Provenance:
        table = _table()
        return Provenance(
            method="measured",
            source=f"{self.description}: column lat_{self.device} of the shipped NB201 "
                   f"table, from HELP (HayeonLee/HELP @ 45f70eb, data/nasbench201; MIT); "
                   f"see {PROVENANCE_FILE}",
            notes=(
                "The published measurement of each cell, looked up: no latency model, so "
                "no model error; the table holds one figure per cell and no spread, so "
                "the measurement noise is not known here.",
                "Degenerate cells (no path from input to output, 341 cells) have "
                "near-zero figures on some devices (Pixel 3: median 0.05 ms, down to "
                "0.003 ms), though the network still runs its stem, reductions and head; "
                "treat their latencies with care.",
                f"Only the {SUPERNET_FAMILY!r} supernet's subnets are covered.",
            ),
            details={"table_sha256": table.sha256, "column": f"lat_{self.device}",
                     "cells": len(table)},
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:nb201-table-{_table().sha256[:16]}:lat_{self.device}"


DEVICES = (
    ("pixel3", "pixel3", "Google Pixel 3"),
    ("gold6226", "gold_6226", "Intel Xeon Gold 6226"),
    ("nb201-raspi4", "raspi4", "Raspberry Pi 4"),
    ("nb201-titanxp", "titanxp_1", "NVIDIA Titan Xp (batch 1)"),
    ("nb201-1080ti", "1080ti_32", "NVIDIA GTX 1080 Ti (batch 32)"),
)
"""(target name, the table's latency column without ``lat_``, the device in words)."""

for _name, _device, _description in DEVICES:
    HARDWARE.register(_name, description=f"{_description}, published NAS-Bench-201 latencies "
                      "(nb201 supernet only)")(
        functools.partial(NB201TableTarget, name=_name, device=_device,
                          description=_description))
