"""The batches of every training step: one global batch drawn from the run's seed,
split into equal parts among the ranks and the gradient-accumulation micro-batches.

Every rank draws the same global batch keys (a cheap, sequential stream) and loads only
its own parts, optionally in DataLoader worker processes. Drawing is replayable: a
resumed run skips the steps already trained by drawing their keys again, so it sees the
batches an uninterrupted run would. A task that cannot draw keys
(:meth:`~nas._task.Task.train_keys` returns ``None``) hands out whole batches, which
are split after loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nas._task import BatchKeys, Task

Batch = tuple[torch.Tensor, ...]
MAX_WORKERS = 64
"""Most loader worker processes a rank may ask for (and at most four per core)."""


class StepBatches:
    """This rank's parts of each step's global batch, in order.

    Args:
        task: draws and loads the batches.
        batch_size: examples per step, all ranks and micro-batches together.
        seed: seeds the stream (the same on every rank).
        world, rank: the run's ranks and this one.
        accumulate: micro-batches per rank and step.
        workers: DataLoader worker processes loading this rank's parts (0: in this
            process). Needs a task that draws keys.

    Raises:
        ValueError: workers for a task that only draws whole batches.
    """

    def __init__(self, task: Task, *, batch_size: int, seed: int, world: int = 1,
                 rank: int = 0, accumulate: int = 1, workers: int = 0) -> None:
        parts = world * accumulate
        generator = torch.Generator().manual_seed(seed)
        keys = task.train_keys(batch_size=batch_size, generator=generator)
        bounds = [(i * batch_size // parts, (i + 1) * batch_size // parts) for i in range(parts)]
        self._mine = bounds[rank * accumulate:(rank + 1) * accumulate]
        self._task = task
        self._keys = keys
        if keys is None:
            if workers:
                raise ValueError(f"task {task.name!r} hands out whole batches and cannot load "
                                 "them in worker processes; use --workers 0")
            self._whole = task.train_batches(batch_size=batch_size, generator=generator)
        self.workers = workers
        self._loaded: Iterator[Batch] | None = None

    def skip(self, steps: int) -> None:
        """Draw ``steps`` steps' batches without training on them (resuming a run)."""
        if self._loaded is not None:
            raise RuntimeError("skip() must come before the first step")
        draw = self._keys if self._keys is not None else self._whole
        for _ in range(steps):
            draw()

    def next_step(self) -> list[Batch]:
        """This rank's ``accumulate`` parts of the next step's batch."""
        if self._keys is None:
            whole = self._whole()
            return [tuple(t[lo:hi] for t in whole) for lo, hi in self._mine]
        if self.workers == 0:
            keys = self._keys()
            return [self._task.load_batch(keys[lo:hi]) for lo, hi in self._mine]
        if self._loaded is None:
            self._loaded = iter(DataLoader(
                _Loader(self._task), sampler=_PartKeys(self._keys, self._mine),
                batch_size=None, num_workers=self.workers))
        return [next(self._loaded) for _ in self._mine]


class _PartKeys(Sampler[Any]):
    """The keys of this rank's parts, step after step (consumed ahead by the loader)."""

    def __init__(self, keys: Callable[[], BatchKeys], mine: list[tuple[int, int]]) -> None:
        self._keys, self._mine = keys, mine

    def __iter__(self) -> Iterator[BatchKeys]:
        while True:
            keys = self._keys()
            for lo, hi in self._mine:
                yield keys[lo:hi]


class _Loader(Dataset[Batch]):
    """Loads the batch of a part's keys (in a worker process)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __getitem__(self, keys: BatchKeys) -> Batch:
        return self.task.load_batch(keys)
