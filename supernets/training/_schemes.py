"""Training schemes: which subnets each optimiser step trains, and with which loss.

Every weight-sharing family trains its supernet with the same loop
(:func:`nas.supernets.train_supernet`: one batch per step, gradients of several subnets
accumulated into one AdamW step). What differs between the papers is *which* subnets
share a step and how their losses combine; a :class:`TrainingScheme` says exactly that:

- :class:`SandwichRule` (Yu & Huang 2019; BigNAS, HAT): largest + smallest + k random,
  mean of the losses.
- SortedNet samples random nested sub-models and sums their losses; MatFormer sums the
  losses of all its granularities on the same batch; OFA's progressive shrinking widens
  the sampled space phase by phase and distils from the full network. Each family
  defines its scheme next to its supernet.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task

WeightedConfigs = Sequence[tuple[Config, float]]
"""The subnets of one step and the weight of each one's loss in the summed gradient."""


@dataclass(frozen=True)
class TrainingRun:
    """A span of steps trained as a run of its own, as OFA trains each phase: the
    optimiser's state is reset when it starts, and the learning rate follows its own
    schedule (warm-up if ``warmup``, then decay to 0 at the run's last step) peaking at
    ``lr_scale`` times the peak learning rate. It lasts until the next run's first step."""

    first_step: int
    lr_scale: float = 1.0
    warmup: bool = True


class TrainingScheme(abc.ABC):
    """Chooses the subnets of every step; optionally changes their loss.

    The loop calls :meth:`start` once, then for every step ``plan`` and, for each
    planned subnet (activated in turn), ``loss``; it backpropagates
    ``weight * loss`` and takes one optimiser step on the accumulated gradients.
    ``loss`` receives the module to call: the supernet, or on several ranks its
    DistributedDataParallel wrapper (call it; read attributes from ``plan``'s supernet).
    A scheme that keeps state across steps returns it from :meth:`state`, so that a
    killed run resumes exactly.
    :meth:`runs` splits the steps into runs with their own optimiser state and
    learning-rate schedule (one run unless a scheme says otherwise).
    """

    name: str = ""

    def start(self, supernet: Supernet, task: Task, *, steps: int) -> None:
        """Called once before the first step (e.g. to build a teacher); does nothing
        by default."""
        return None

    def runs(self, steps: int) -> Sequence[TrainingRun]:
        """The runs of a training of ``steps`` steps: one run by default."""
        return (TrainingRun(1),)

    @abc.abstractmethod
    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        """The subnets trained at ``step`` (from 1 to ``steps``) with their loss weights."""

    def loss(
        self, supernet: Supernet, task: Task, batch: tuple[torch.Tensor, ...], config: Config
    ) -> torch.Tensor:
        """The loss of the active subnet ``config`` on ``batch``: the task's by default."""
        return task.loss(supernet, batch)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What a resumed run needs beyond the supernet and the generators: JSON-able
        values and tensors (nothing by default)."""
        return {}, {}

    def restore(self, supernet: Supernet, meta: dict[str, Any],
                tensors: dict[str, torch.Tensor]) -> None:
        """Take back what :meth:`state` returned, after :meth:`start` (nothing to do by
        default)."""
        return None

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able settings, recorded in the checkpoint's recipe."""


class SandwichRule(TrainingScheme):
    """Largest, smallest and ``random_subnets`` random subnets; the mean of their losses.

    Training the two extremes every step keeps the whole accuracy range usable: without
    the smallest subnet its weights are rarely trained, without the largest the accuracy
    ceiling sinks. The mean (not the sum) keeps the learning rate and the clip norm
    independent of the number of subnets per step.
    """

    name = "sandwich"

    def __init__(self, random_subnets: int = 2) -> None:
        if isinstance(random_subnets, bool) or not isinstance(random_subnets, int) or (
            random_subnets < 0
        ):
            raise ValueError(f"random_subnets must be >= 0, got {random_subnets!r}")
        self.random_subnets = random_subnets

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        space = supernet.space
        configs = [space.largest(), space.smallest()]
        configs += [space.sample(rng) for _ in range(self.random_subnets)]
        return [(config, 1.0 / len(configs)) for config in configs]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "largest": True, "smallest": True,
                "random_subnets": self.random_subnets}


class FixedSubnet(TrainingScheme):
    """Trains one architecture alone through the same loop: the stand-alone baseline a
    weight-shared subnet is compared with (same steps, batches and optimiser)."""

    name = "fixed-subnet"

    def __init__(self, config: Config) -> None:
        self.config = config

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        return [(self.config, 1.0)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict()}
