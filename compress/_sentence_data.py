"""Sentence-embedding distillation data for compressing a sentence encoder (MiniLM).

A compressed encoder should embed sentences as the original does, so both pruning
(saliency, distillation) and subcloning (calibration, distillation) use the same data:
Python's documentation paragraphs (:mod:`nas.supernets.tasks._pydoc_text`, real English that
installs with Python), tokenised to at most ``max_tokens`` WordPiece tokens, with the
original encoder's L2-normalised mean-pooled embedding of each as the target. The figure
reported everywhere is the mean cosine similarity of a model's embeddings to the
original's on the validation paragraphs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.compress._saliency import LossFn, random_probe_loss
from nas.supernets.tasks._minilm import MiniLMTokenizer, mean_pool
from nas.supernets.tasks._pydoc_text import paragraphs

MAX_TOKENS = 64
"""Tokens per paragraph, as the ``minilm-distill-pydoc`` task."""
_EMBED_BATCH = 64

Batch = tuple[Tensor, Tensor, Tensor]
"""``(input_ids, attention_mask, teacher embedding)``."""


def sentence_embedding(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """The L2-normalised mean of ``model(ids, mask)`` over real tokens: ``(B, C)``."""
    ids, mask = batch[0], batch[1]
    return F.normalize(mean_pool(model(ids, mask), mask), dim=-1)


def distil_loss(student: nn.Module, batch: Batch) -> Tensor:
    """``1 - cosine`` between the student's and the teacher's sentence embeddings."""
    return 1.0 - (sentence_embedding(student, batch) * batch[2]).sum(-1).mean()


def embed_all(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Sentence embeddings of every row, in batches, without gradients."""
    with torch.inference_mode():
        return torch.cat([
            sentence_embedding(model, (ids[i:i + _EMBED_BATCH], mask[i:i + _EMBED_BATCH]))
            for i in range(0, len(ids), _EMBED_BATCH)
        ])


@dataclass(frozen=True)
class SentenceDistillation:
    """Tokenised training and validation paragraphs with the teacher's embeddings (a
    :class:`~nas.compress._task_data.CompressionData`)."""

    metric: ClassVar[str] = "cosine"

    train_ids: Tensor
    train_mask: Tensor
    train_target: Tensor
    val_ids: Tensor
    val_mask: Tensor
    val_target: Tensor

    @classmethod
    def build(
        cls, teacher: nn.Module, tokenizer: MiniLMTokenizer, *, max_tokens: int = MAX_TOKENS
    ) -> SentenceDistillation:
        """Tokenise the pydoc paragraphs and embed them with ``teacher`` (once)."""
        teacher = teacher.eval()
        train_ids, train_mask = tokenizer(list(paragraphs("train")), max_length=max_tokens)
        val_ids, val_mask = tokenizer(list(paragraphs("validation")), max_length=max_tokens)
        return cls(train_ids, train_mask, embed_all(teacher, train_ids, train_mask),
                   val_ids, val_mask, embed_all(teacher, val_ids, val_mask))

    def batches(self, size: int, generator: torch.Generator) -> Callable[[], Batch]:
        """Random training batches, their all-padding columns cut."""
        if size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")

        def next_batch() -> Batch:
            pick = torch.randint(len(self.train_ids), (size,), generator=generator)
            width = int(self.train_mask[pick].sum(1).max())
            return self.train_ids[pick, :width], self.train_mask[pick, :width], \
                self.train_target[pick]

        return next_batch

    def calibration(self, count: int, size: int = 16) -> list[tuple[Tensor, Tensor]]:
        """The first ``count`` training paragraphs as ``(ids, mask)`` batches of ``size``."""
        ids, mask = self.train_ids[:count], self.train_mask[:count]
        return [(ids[i:i + size], mask[i:i + size]) for i in range(0, len(ids), size)]

    def saliency_loss(self, seed: int) -> LossFn:
        """Random projections of the sentence embedding: the dense model reproduces its
        own embeddings exactly, so the distillation loss has no gradient there
        (:func:`~nas.compress._saliency.random_probe_loss`)."""
        return random_probe_loss(sentence_embedding, seed=seed)

    def distil_loss(self, student: nn.Module, batch: Batch) -> Tensor:
        """``1 - cosine`` to the teacher's sentence embeddings."""
        return distil_loss(student, batch)

    def score(self, model: nn.Module) -> dict[str, float]:
        """``{"cosine": ...}`` on the validation paragraphs."""
        return {"cosine": self.cosine(model)}

    def cosine(self, model: nn.Module) -> float:
        """Mean cosine similarity of ``model``'s embeddings to the teacher's on the
        validation paragraphs."""
        was = model.training
        model.eval()
        embeddings = embed_all(model, self.val_ids, self.val_mask)
        model.train(was)
        return float((embeddings * self.val_target).sum(-1).mean())
