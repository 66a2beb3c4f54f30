"""SortedNet: its training scheme, its digits tasks and its registrations.

Valipour et al., "SortedNet, a Place for Every Network and Every Network in its Place"
(2023, https://arxiv.org/abs/2309.00255). Importing this module registers:

- the supernet ``sortednet``: the shipped sorted MLP trained on ``digits-vector``;
- the supernet families ``sortednet`` (:class:`SortedMLP`) and ``sortednet-transformer``
  (:class:`SortedTransformer`), which rebuild checkpoints, and their dense sub-models;
- the tasks ``digits-vector`` (64 pixels) and ``digits-rows`` (8 rows of 8 pixels, a
  sequence for the transformer);
- the zoo entry ``sortednet`` (``nas train --supernet sortednet``); with ``--data ROOT``
  it trains on a user's image folder read as the digits vectors are (grey, 8x8, 64
  inputs: :func:`image_folder_task`), the MLP's inputs and classes taken from the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas._supernet import SUPERNET_FAMILIES, SUPERNETS, Supernet
from nas._task import TASKS, Task
from nas.supernets.sortednet._dense import DenseSortedMLP, DenseSortedTransformer
from nas.supernets.sortednet._models import SortedMLP, SortedTransformer
from nas.supernets.tasks._digits import CLASSES as DIGITS_CLASSES
from nas.supernets.tasks._digits import NATIVE_RESOLUTION, DigitsTask
from nas.supernets.tasks._images import ImageFolderTask
from nas.supernets.training._schemes import TrainingScheme, WeightedConfigs
from nas.supernets.training._zoo import ZooRecipe, add_recipe, load_zoo_checkpoint

__all__ = [
    "DenseSortedMLP",
    "DenseSortedTransformer",
    "DigitRowsTask",
    "LargestOnly",
    "SortedMLP",
    "SortedTraining",
    "SortedTransformer",
    "NAME",
    "TASK_NAME",
    "ZOO_WIDTHS",
]

NAME = "sortednet"
TASK_NAME = "digits-vector"
ROWS_TASK_NAME = "digits-rows"
ZOO_WIDTHS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
"""Width fractions of the shipped MLP: 32, 64, ..., 256 units per hidden layer."""
LABEL_SMOOTHING = 0.1
"""Of the digits tasks' training loss. Without it the wide sub-models, which fit the
1,258 training digits exactly, grow over-confident and their held-out cross-entropy
rises with width (a 600-step run without it: 0.14 at 64 units, 0.27 at 256) while their
accuracy does not drop; the held-out loss of ``evaluate`` stays the plain cross-entropy."""


class SortedTraining(TrainingScheme):
    """SortedNet's update: random nested sub-models, gradients accumulated, one step.

    What we follow from the paper's update scheme ("random sub-model sampling" combined
    with "gradient accumulation"): at every iteration ``sub_models`` (the paper's
    gradient-accumulation count ``g_acc``) sub-models are drawn, each by sampling every
    sorted dimension independently and uniformly (here the shared ``width`` fraction and
    the ``depth``); the gradients of their losses are accumulated by summation (weight 1
    each, not a mean) and the shared parameters take one optimiser step on the sum. The
    largest model is not forced into each step: it is one member of the sorted list,
    drawn like any other. One departure: the paper accumulates over successive
    mini-batches, while the platform's loop feeds one batch per step to every planned
    sub-model.

    Args:
        sub_models: sub-models per optimiser step (``g_acc``).
    """

    name = "sortednet"

    def __init__(self, sub_models: int = 4) -> None:
        if isinstance(sub_models, bool) or not isinstance(sub_models, int) or sub_models < 1:
            raise ValueError(f"sub_models must be a positive integer, got {sub_models!r}")
        self.sub_models = sub_models

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        return [(supernet.space.sample(rng), 1.0) for _ in range(self.sub_models)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sub_models": self.sub_models, "sampling": "uniform",
                "combine": "sum", "largest_forced": False}


class LargestOnly(TrainingScheme):
    """Conventional training of the largest model alone: the paper's baseline, whose
    prefixes (first units, first layers) SortedNet's sub-models are compared with."""

    name = "largest-only"

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        return [(supernet.space.largest(), 1.0)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class DigitRowsTask(DigitsTask):
    """The digits as sequences: 8 tokens (rows) of 8 pixel features, ``(n, 8, 8)``."""

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = super().split(split)
        return inputs.reshape(-1, NATIVE_RESOLUTION, NATIVE_RESOLUTION), labels


@TASKS.register(
    TASK_NAME,
    description="handwritten digits (scikit-learn, offline) as 64 standardised pixels",
)
def digits_vector() -> Task:
    return DigitsTask(TASK_NAME, layout="vector", label_smoothing=LABEL_SMOOTHING)


@TASKS.register(
    ROWS_TASK_NAME,
    description="handwritten digits (scikit-learn, offline) as 8 rows of 8 pixels (sequences)",
)
def digit_rows() -> Task:
    return DigitRowsTask(ROWS_TASK_NAME, layout="vector", label_smoothing=LABEL_SMOOTHING)


SUPERNET_FAMILIES.register(NAME, description="SortedNet sorted MLP")(SortedMLP.from_architecture)
SUPERNET_FAMILIES.register("sortednet-transformer", description="SortedNet sorted transformer")(
    SortedTransformer.from_architecture
)


@SUPERNETS.register(
    NAME,
    description="SortedNet sorted MLP (3 hidden layers of 32..256 units, depth 1-3) trained "
    "on handwritten digits (task digits-vector)",
)
def sortednet() -> Supernet:
    """The shipped sorted MLP with its trained weights, in eval mode."""
    return load_zoo_checkpoint(NAME)


def image_folder_task(root: Path) -> ImageFolderTask:
    """The task on a user's image folder ``ROOT/<class name>/<images>`` (``--data``), as
    the digits vectors are: grey 8x8 images flattened to 64 standardised pixels."""
    return ImageFolderTask(root, layout="vector", resolution=NATIVE_RESOLUTION, channels=1,
                           label_smoothing=LABEL_SMOOTHING)


def _build_digits_mlp(task: Task) -> Supernet:
    """An untrained sorted MLP sized for the task's vectors: the 64-pixel digits (10
    classes) or a user's image folder (its inputs and classes)."""
    if isinstance(task, ImageFolderTask) and task.layout == "vector":
        features, classes = task.in_features, task.num_classes
    elif isinstance(task, DigitsTask) and task.layout == "vector":
        features, classes = NATIVE_RESOLUTION * NATIVE_RESOLUTION, DIGITS_CLASSES
    else:
        raise TypeError(f"the {NAME} zoo entry needs the digits-vector task or an image "
                        f"folder in the vector layout, got {task!r}")
    return SortedMLP(in_features=features, hidden_dim=256, max_depth=3, num_classes=classes,
                     widths=ZOO_WIDTHS)


add_recipe(
    ZooRecipe(
        name=NAME,
        stem="sortednet-digits",
        task=TASK_NAME,
        build=_build_digits_mlp,
        steps=1500,
        batch_size=64,
        lr=1e-3,
        seed=0,
        warmup=75,
        scheme=SortedTraining,
        eval_limit=None,
        user_task=image_folder_task,
    )
)

