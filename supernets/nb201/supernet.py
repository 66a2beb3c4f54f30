"""The supernet ``nb201`` and its task ``nb201-cifar10``: NAS-Bench-201 as a real network.

``nas.get_supernet("nb201")`` is the one-shot :class:`NB201SuperNetwork` (C = 16,
N = 5, 10 classes) with **random weights**: no trained NAS-Bench-201 weights may ship
with the project, so the weights are drawn from torch's default initialisation with a
fixed seed (:data:`SEED`), the same on every run of the same torch version. They serve
latency and memory measurements (``nas profile --supernet nb201 --hw local-cpu``),
export and checks of the network code, not accuracy.

Accuracy is **tabular**: :class:`NB201Cifar10Task` answers the CIFAR-10 test accuracy
that NAS-Bench-201 reports for the cell, trained alone from scratch (200 epochs, mean of
the benchmark's seeds; ``data/PROVENANCE.md``), whatever the weights of the model it is
given. A search with this supernet therefore finds the cells the benchmark ranks best,
exactly as ``nas bench search`` does, but through the real search job and any hardware
target, including ones that time the real network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas._space import Config
from nas._supernet import SUPERNETS, Supernet
from nas._task import TASKS, Task, Workload, forward_probe
from nas.supernets.nb201 import NB201_SPACE, NB201Table
from nas.supernets.nb201._network import IMAGE_SIZE, NB201Network, NB201SuperNetwork

__all__ = ["NB201Cifar10Task", "nb201_supernet", "SEED", "TASK_NAME"]

SEED = 0
"""Seed of the supernet's random initialisation."""
TASK_NAME = "nb201-cifar10"
SPLITS = ("validation", "test")
"""Splits :meth:`NB201Cifar10Task.evaluate` accepts; both answer the table's test
accuracy (the only CIFAR-10 accuracy the shipped table holds)."""


@SUPERNETS.register(
    "nb201",
    description="NAS-Bench-201 CIFAR-10 one-shot supernet, random weights (seed 0; no "
    "trained weights ship); accuracy from the NAS-Bench-201 table (task nb201-cifar10)",
)
def nb201_supernet() -> Supernet:
    """The NAS-Bench-201 one-shot supernet with seeded random weights, in eval mode."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(SEED)
        net = NB201SuperNetwork()
    net.task_name = TASK_NAME
    net.checkpoint_hash = _fingerprint(net, NB201Table.default().sha256)
    return net.eval()


def _fingerprint(net: nn.Module, table_sha256: str) -> str:
    """sha256 of the weights and of the accuracy table: both decide the figures a
    study records, so a new torch initialisation or a new table starts a new study."""
    digest = hashlib.sha256(f"nb201-table:{table_sha256}".encode())
    for key, tensor in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cell_of(model: nn.Module) -> Config:
    """The cell a NAS-Bench-201 network runs: the supernet's active one or the dense
    network's own.

    Raises:
        TypeError: ``model`` is neither network.
    """
    if isinstance(model, NB201SuperNetwork):
        return model.active_config
    if isinstance(model, NB201Network):
        return NB201_SPACE.config(model.config)
    raise TypeError(f"task {TASK_NAME} scores NB201SuperNetwork or NB201Network models by "
                    f"table lookup, got {type(model).__name__}")


@TASKS.register(
    TASK_NAME,
    description="CIFAR-10 test accuracy of NAS-Bench-201 cells, looked up in the table",
)
class NB201Cifar10Task(Task):
    """CIFAR-10 classification scored by NAS-Bench-201's table (tabular, no images).

    ``evaluate`` returns the benchmark's test accuracy of the model's cell, trained
    alone; the model's own weights play no part. Latency targets time one 32x32 image
    through the dense network.

    Args:
        table: the table to look accuracies up in; the shipped one when omitted.
    """

    name = TASK_NAME

    def __init__(self, table: NB201Table | None = None) -> None:
        self.table = NB201Table.default() if table is None else table

    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """``{"accuracy": fraction}`` of the model's cell from the table.

        ``split`` must be ``validation`` or ``test`` (both give the table's test
        accuracy); ``limit`` is ignored, since no example is scored.

        Raises:
            ValueError: another split.
            TypeError: ``model`` is not a NAS-Bench-201 network.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        rows = self.table.rows([cell_of(model)])
        return {"accuracy": float(self.table.accuracy(rows, dataset="cifar10")[0])}

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Cross-entropy of ``model(images)`` against ``labels``; batch = (images, labels)."""
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    def train_batches(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Refused: no CIFAR-10 images ship, so this task cannot train."""
        raise ValueError(f"task {TASK_NAME} ships no CIFAR-10 images and cannot train; its "
                         "accuracy is the NAS-Bench-201 table's")

    def workload(self) -> Workload:
        """One image in, one prediction out, batch 1 (the seq2seq lengths read as 1)."""
        return Workload(src_len=1.0, tgt_len=1.0, batch=1, beam=1)

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """Classify :meth:`example_inputs`'s image, on the model's device and dtype."""
        return forward_probe(model, self.example_inputs())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """One normalised-CIFAR-like image ``(1, 3, 32, 32)``: seeded standard normal
        noise (the network has no data-dependent control flow, so its cost does not
        depend on the pixels)."""
        generator = torch.Generator().manual_seed(SEED)
        return (torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),)
