"""The task contract: data, loss and metric for training and validating a supernet."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nas._registry import Registry

BatchKeys = list[int] | torch.Tensor
"""The examples of a training batch, as :meth:`Task.train_keys` draws them."""


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

    def train_batches(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], tuple[torch.Tensor, ...]]:
        """A function that returns the next shuffled training batch.

        By default it loads the keys :meth:`train_keys` draws; a task that does not
        split drawing from loading overrides this method instead.
        """
        keys = self.train_keys(batch_size=batch_size, generator=generator)
        if keys is None:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither train_batches nor train_keys")
        return lambda: self.load_batch(keys())

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], BatchKeys] | None:
        """Optional: a function that returns the keys of the next training batch (one key
        per example, in order; a list or a 1-D tensor), or ``None``.

        Drawing keys is cheap and sequential; :meth:`load_batch` turns any slice of them
        into tensors. Splitting the two lets the training loop replay the stream to
        resume a run, give each rank only its share of a batch and load in worker
        processes. Built-in tasks draw the same batches either way.
        """
        return None

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        """The training batch of ``keys`` (any slice of what :meth:`train_keys` drew)."""
        raise NotImplementedError(f"{type(self).__name__} does not draw keys")

    def loss_units(self, batch: tuple[torch.Tensor, ...]) -> int:
        """How many terms :meth:`loss` averages over on ``batch``: its examples by
        default; a task that averages over tokens counts its tokens. The training loop
        weighs the parts of a split batch by it, so that they add up to the loss of the
        whole batch."""
        return int(batch[0].shape[0])

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


def shuffled_epochs(
    size: int, *, batch_size: int, generator: torch.Generator
) -> Callable[[], list[int]]:
    """Keys of ``batch_size`` examples out of ``size``, epoch after epoch: a fresh
    permutation is appended whenever fewer than ``batch_size`` keys are left, so a
    batch may straddle two epochs and every example is drawn once per epoch."""
    order: list[int] = []

    def next_keys() -> list[int]:
        nonlocal order
        if len(order) < batch_size:
            order += torch.randperm(size, generator=generator).tolist()
        keys, order = order[:batch_size], order[batch_size:]
        return keys

    return next_keys


TASKS: Registry[Task] = Registry("task", plugins=("nas.supernets",))
"""Built-in tasks: ``name -> () -> Task`` (data, loss, metric, latency probe)."""


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name lists the known ones."""
    return TASKS.create(name)
