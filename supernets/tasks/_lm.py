"""The task ``pydoc-lm``: byte-level next-token prediction on Python's documentation.

:class:`ByteLMTask` is the task on any text's splits; a user's text files
(:mod:`nas.supernets.tasks._text_files`) reuse it.

The text is ``pydoc_data``'s topics (:mod:`nas.supernets.tasks._pydoc_text`, split by topic
80/10/10), which every CPython installs, so the task needs no download. Tokens are the
UTF-8 bytes of the text (vocabulary 256, no tokenizer to ship). Training draws random
windows of ``context + 1`` bytes from the train split; evaluation scores consecutive,
non-overlapping windows of the held-out split, each position predicting the next byte.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas._task import TASKS, BatchKeys, Task, Workload, forward_probe, model_device
from nas.supernets.tasks._pydoc_text import SPLITS, text

__all__ = ["LM_TASK_NAME", "ByteLMTask", "PydocLMTask", "VOCAB_SIZE"]

LM_TASK_NAME = "pydoc-lm"
VOCAB_SIZE = 256
"""Byte-level tokens."""
EVAL_BATCH = 64


@functools.cache
def _bytes(split: str) -> torch.Tensor:
    """The split's text as a 1-D tensor of byte ids (int64)."""
    data = text(split).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


class ByteLMTask(Task):
    """Next-byte prediction on a text's three splits, windows of ``context`` bytes.

    ``evaluate`` returns ``accuracy`` (top-1 next-byte accuracy, what the search
    maximises), ``loss`` (mean cross-entropy, nats per byte), ``perplexity`` and
    ``bits_per_byte``. ``limit`` counts windows of ``context`` predicted bytes.
    Subclasses say where the bytes come from (:meth:`split_bytes`).

    Args:
        context: bytes the model sees per window (its positions must cover them).

    Raises:
        ValueError: a ``context`` that is not a positive integer.
    """

    def __init__(self, context: int = 64) -> None:
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be a positive integer, got {context!r}")
        self.context = context

    @abc.abstractmethod
    def split_bytes(self, split: str) -> torch.Tensor:
        """The text of ``split`` as a 1-D tensor of byte ids (int64)."""

    def windows(self, split: str, *, limit: int | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs and targets ``(N, context)`` of ``split``'s consecutive windows.

        Raises:
            ValueError: an unknown split or a ``limit`` that is not a positive integer.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        data = self.split_bytes(split)
        n = (len(data) - 1) // self.context
        n = n if limit is None else min(n, limit)
        starts = torch.arange(n) * self.context
        offsets = torch.arange(self.context + 1)
        chunks = data[starts[:, None] + offsets]  # (N, context + 1)
        return chunks[:, :-1], chunks[:, 1:]

    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """Score ``model`` (byte ids ``(B, T)`` -> logits ``(B, T, 256)``) on ``split``.

        Raises:
            ValueError: an unknown split or an invalid ``limit``.
        """
        inputs, targets = self.windows(split, limit=limit)
        device = model_device(model)
        was_training = model.training
        model.eval()
        total_loss, correct = 0.0, 0
        with torch.inference_mode():
            for i in range(0, len(inputs), EVAL_BATCH):
                x = inputs[i:i + EVAL_BATCH].to(device)
                y = targets[i:i + EVAL_BATCH].to(device)
                logits = model(x).float()  # (B, T, V)
                total_loss += float(F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
        model.train(was_training)
        count = targets.numel()
        loss = total_loss / count
        return {
            "accuracy": correct / count,
            "loss": loss,
            "perplexity": math.exp(loss),
            "bits_per_byte": loss / math.log(2),
        }

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean next-byte cross-entropy; ``batch`` = (inputs, targets), both ``(B, T)``."""
        inputs, targets = batch
        logits = model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], torch.Tensor]:
        """Start offsets of random windows of the train split (uniform, drawn by
        ``generator``)."""
        size = len(self.split_bytes("train"))

        def next_keys() -> torch.Tensor:
            return torch.randint(size - self.context - 1, (batch_size,), generator=generator)

        return next_keys

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        """Inputs and next-byte targets ``(B, context)`` of the windows starting at ``keys``."""
        starts = torch.as_tensor(keys)
        chunks = self.split_bytes("train")[starts[:, None] + torch.arange(self.context + 1)]
        return chunks[:, :-1], chunks[:, 1:]

    def workload(self) -> Workload:
        """One forward pass over a full window (the prompt), batch 1."""
        return Workload(src_len=float(self.context), tgt_len=1.0, batch=1, beam=1)

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """One batch-1 forward pass of :meth:`example_inputs` (next-byte logits of a
        full window), on the model's device."""
        return forward_probe(model, self.example_inputs())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """The first validation window, ``(1, context)`` byte ids."""
        inputs, _ = self.windows("validation", limit=1)
        return (inputs,)


@TASKS.register(
    LM_TASK_NAME,
    description="byte-level language modelling of Python's pydoc_data topics "
    "(next-byte top-1 accuracy, cross-entropy in nats/byte)",
)
class PydocLMTask(ByteLMTask):
    """Next-byte prediction on pydoc text (:mod:`nas.supernets.tasks._pydoc_text`).

    Args:
        context: bytes the model sees per window (its positions must cover them).
    """

    name = LM_TASK_NAME

    def split_bytes(self, split: str) -> torch.Tensor:
        return _bytes(split)
