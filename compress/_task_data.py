"""Compression data for a supernet's subnet: the batches, losses and score of its task.

A subnet exported by ``nas export`` names its task (``pydoc-lm`` for MatFormer,
``minilm-distill-pydoc`` for FlexiBERT), so compressing it uses that task's own training
batches, loss and validation score:

- saliency: the task loss (NViT ranks structures by the curvature of the loss the model
  is trained on);
- distillation after each pruning step and after subcloning: the task loss, plus, for a
  language model or an encoder-decoder (HAT), the soft-target cross-entropy to the
  uncompressed model's next-token distribution (knowledge distillation from the dense
  teacher, as NViT and OFA do);
- score: the task's validation metrics (``accuracy`` is the one the search maximises).

:class:`~nas.compress._sentence_data.SentenceDistillation` offers the same methods for
the pretrained MiniLM, whose "task" is to reproduce its own sentence embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._task import Task
from nas.compress._saliency import LossFn

__all__ = ["CompressionData", "TaskData"]


class CompressionData(Protocol):
    """What a compression job needs from its data."""

    metric: str
    """The key of :meth:`score` reported as the headline figure."""

    def batches(self, size: int, generator: torch.Generator) -> Callable[[], Any]: ...

    def calibration(self, count: int, size: int = 16) -> list[tuple[Tensor, Tensor]]: ...

    def saliency_loss(self, seed: int) -> LossFn: ...

    def distil_loss(self, student: nn.Module, batch: Any) -> Tensor: ...

    def score(self, model: nn.Module) -> dict[str, float]: ...


@dataclass(frozen=True)
class TaskData:
    """A task's data for compressing ``teacher`` (the uncompressed model, frozen).

    Args:
        task: the registered task the source was trained on.
        teacher: the source model (its next-token distribution is the soft target when
            ``language_model``).
        language_model: the model maps token ids ``(B, T)`` to next-token logits and
            batches are ``(inputs, targets)``; distillation then adds the soft-target term.
        seq2seq: the model maps ``(src, prev)`` to logits ``(B, T, V)`` and batches are
            ``(src, prev, targets)`` (padding 0); distillation then adds the soft-target
            term over the non-pad target positions.
        limit: validation examples :meth:`score` uses (``None``: all).
    """

    task: Task
    teacher: nn.Module
    language_model: bool
    limit: int | None = None
    seq2seq: bool = False
    metric: str = "accuracy"

    def batches(self, size: int, generator: torch.Generator) -> Callable[[], Any]:
        """The task's random training batches."""
        if size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")
        return self.task.train_batches(batch_size=size, generator=generator)

    def calibration(self, count: int, size: int = 16) -> list[tuple[Tensor, Tensor]]:
        """``count`` training inputs as ``(ids, mask)`` batches of ``size`` (a fixed seed;
        a language model's windows have no padding)."""
        draw = self.batches(size, torch.Generator().manual_seed(0))
        out = []
        for _ in range(-(-count // size)):
            batch = draw()
            ids = batch[0]
            mask = torch.ones_like(ids) if self.language_model else batch[1]
            out.append((ids, mask))
        return out

    def saliency_loss(self, seed: int) -> LossFn:
        """The task loss (``seed`` unused: the loss is deterministic given the batch)."""
        return self.task.loss

    def distil_loss(self, student: nn.Module, batch: Any) -> Tensor:
        """The task loss, plus the soft-target cross-entropy to the teacher for an LM or
        an encoder-decoder."""
        if self.seq2seq:
            src, prev, targets = batch
            logits = student(src, prev)  # (B, T, V)
            with torch.no_grad():
                soft = self.teacher(src, prev).softmax(-1)
            keep = targets != 0  # (B, T): target positions that are not padding
            log_p = F.log_softmax(logits, -1)[keep]  # (N, V)
            return F.nll_loss(log_p, targets[keep]) - (soft[keep] * log_p).sum(-1).mean()
        if not self.language_model:
            return self.task.loss(student, batch)
        inputs, targets = batch
        logits = student(inputs)  # (B, T, V)
        with torch.no_grad():
            soft = self.teacher(inputs).softmax(-1)
        log_p = F.log_softmax(logits, -1)
        hard = F.nll_loss(log_p.flatten(0, 1), targets.flatten())
        return hard - (soft * log_p).sum(-1).mean()

    def score(self, model: nn.Module) -> dict[str, float]:
        """The task's validation metrics."""
        return self.task.evaluate(model, split="validation", limit=self.limit)
