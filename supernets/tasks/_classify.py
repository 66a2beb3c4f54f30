"""What the image-classification tasks share: the split rule, the metric and the loss.

The digits (:mod:`nas.supernets.tasks._digits`) and a user's image folder
(:mod:`nas.supernets.tasks._images`) split the same way (:func:`stratified_split`) and are
scored the same way (:class:`ClassificationTask`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._task import BatchKeys, Task, Workload, forward_probe, shuffled_epochs

__all__ = ["SPLITS", "SPLIT_SEED", "ClassificationTask", "stratified_split"]

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0
_EVAL_BATCH = 512


def stratified_split(labels: Sequence[int] | np.ndarray, classes: int, *,
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Sorted indices of a 70/15/15 train/validation/test split, stratified by class.

    Each class's members are permuted by one generator seeded with ``seed`` (classes in
    order), and the first 70 % (rounded) go to train, the next 15 % to validation, the
    rest to test: the same split on every machine for the same labels.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in range(classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train, n_val = round(0.70 * len(members)), round(0.15 * len(members))
        parts["train"].append(members[:n_train])
        parts["validation"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


class ClassificationTask(Task):
    """Classify an input; ``accuracy`` is top-1 on the split, ``loss`` its cross-entropy.

    Subclasses provide :meth:`split`; training draws shuffled epochs over the training
    split (a subclass that loads lazily overrides :meth:`train_keys` and
    :meth:`load_batch`).
    """

    label_smoothing: float = 0.0

    @abc.abstractmethod
    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of ``split``."""

    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """``accuracy`` and mean cross-entropy ``loss`` on ``split`` (first ``limit``)."""
        inputs, labels = self.split(split)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be a positive integer, got {limit!r}")
            inputs, labels = inputs[:limit], labels[:limit]
        model.eval()
        correct, total_loss = 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(labels), _EVAL_BATCH):
                logits = model(inputs[start:start + _EVAL_BATCH])
                target = labels[start:start + _EVAL_BATCH]
                correct += int((logits.argmax(-1) == target).sum())
                total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        return {"accuracy": correct / len(labels), "loss": total_loss / len(labels)}

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels, label_smoothing=self.label_smoothing)

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], list[int]]:
        """Shuffled epochs over the training split, ``batch_size`` examples at a time."""
        return shuffled_epochs(len(self.split("train")[1]), batch_size=batch_size,
                               generator=generator)

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        inputs, labels = self.split("train")
        return inputs[keys], labels[keys]

    def workload(self) -> Workload:
        """One input in, one prediction out, batch 1 (the seq2seq lengths read as 1)."""
        return Workload(src_len=1.0, tgt_len=1.0, batch=1, beam=1)

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """Classify :meth:`example_inputs`'s input, on the model's device and dtype."""
        return forward_probe(model, self.example_inputs())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """The first validation input, batch 1."""
        return (self.split("validation")[0][:1].clone(),)
