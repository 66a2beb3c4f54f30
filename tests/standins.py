"""Stand-ins shared by test modules: the parts of a task that hardware code uses,
without loading any data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nas import Workload
from nas._task import Task

G2P_WORKLOAD = Workload(src_len=8.49, tgt_len=7.33, batch=1, beam=1)
"""The built-in G2P task's workload (mean validation lengths, eos included)."""


class StandInTask(Task):
    """The parts of a seq2seq task that hardware targets use, without loading data."""

    name = "stand-in-g2p"

    def __init__(self, workload: Workload = G2P_WORKLOAD, src_len: int = 8, steps: int = 7) -> None:
        self._workload = workload
        gen = torch.Generator().manual_seed(0)
        self._src = torch.randint(4, 33, (1, src_len), generator=gen)
        self._prev = torch.randint(4, 73, (1, steps), generator=gen)

    def workload(self) -> Workload:
        return self._workload

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return self._src, self._prev

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        steps = self._prev.shape[1]

        def probe() -> None:
            with torch.inference_mode():
                model.greedy_decode(self._src, max_len=steps, steps=steps)

        return probe

    def evaluate(self, model, *, split="validation", limit=None):  # pragma: no cover
        raise NotImplementedError

    def loss(self, model, batch):  # pragma: no cover
        raise NotImplementedError

    def train_batches(self, *, batch_size, generator):  # pragma: no cover
        raise NotImplementedError
