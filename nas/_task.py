"""The task contract: data, loss and metric for training and validating a supernet."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nas._registry import Registry


@dataclass(frozen=True)
class Workload:
    """The inference a latency figure refers to (batch 1 unless stated).

    For sequence-to-sequence tasks ``src_len`` and ``tgt_len`` are mean token counts
    (end-of-sequence included) of the validation split; ``beam`` is the beam size.
    """

    src_len: float
    tgt_len: float
    batch: int = 1
    beam: int = 1


class Task(abc.ABC):
    """Data, loss and metric. Built-in tasks use data that installs offline.

    Metrics returned by :meth:`evaluate` are fractions in [0, 1] where that makes sense;
    ``accuracy`` is the one the search maximises.
    """

    name: str = ""

    @abc.abstractmethod
    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """Score ``model`` on ``split`` (the first ``limit`` examples if given)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The training loss of ``model`` on one batch."""

    @abc.abstractmethod
    def train_batches(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], tuple[torch.Tensor, ...]]:
        """A function that returns the next shuffled training batch."""

    @abc.abstractmethod
    def workload(self) -> Workload:
        """The typical single inference that latency targets measure or predict."""

    @abc.abstractmethod
    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """A zero-argument function that runs one batch-1 inference of a representative
        example with ``model`` (greedy decoding of the real output length for seq2seq);
        hardware targets time it."""

    @abc.abstractmethod
    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Inputs for one forward pass (batch 1), used by MAC and parameter counters."""


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are: its first parameter's or buffer's device, the CPU
    for a model without any (an exported graph on ONNX Runtime, ``OnnxModule``)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def forward_probe(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    """A latency probe running one forward pass ``model(*inputs)`` without autograd; the
    inputs move to the model's device once, floating ones to its dtype too."""
    weight = next(model.parameters())
    moved = tuple(
        x.to(device=weight.device, dtype=weight.dtype) if x.is_floating_point()
        else x.to(weight.device)
        for x in inputs
    )

    def probe() -> None:
        with torch.inference_mode():
            model(*moved)

    return probe


TASKS: Registry[Task] = Registry("task", plugins=("nas.supernets",))


def get_task(name: str) -> Task:
    return TASKS.create(name)
