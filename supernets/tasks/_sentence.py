"""Sentence-embedding distillation from MiniLM on Python's documentation paragraphs.

The task ``minilm-distill-pydoc``: a student encoder reads a paragraph of the ``pydoc``
topics (:mod:`nas.supernets.tasks._pydoc_text`, real English that installs with Python), mean
pools its output over the real tokens and L2-normalises it; the target is the teacher's
sentence embedding of the same text (all-MiniLM-L6-v2, the optional ``minilm`` extra),
computed once per process and split and kept in memory. Loss = ``1 - cosine``.

``evaluate`` reports ``accuracy`` = the mean cosine similarity between student and
teacher embeddings on the split (cosine fidelity in [-1, 1], **not** a classification
accuracy; the search maximises it) and the same figure as ``cosine``.

Text conventions: MiniLM's WordPiece tokenizer, ``[CLS] ... [SEP]`` truncated to
:data:`MAX_TOKENS`, padded to exactly :data:`MAX_TOKENS` (so the length-dependent linear
transforms see the same sequence length in training, validation and deployment). The
student's vocabulary is the MiniLM ids that occur in the training split (plus the
specials), renumbered densely; other ids read ``[UNK]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._task import TASKS, BatchKeys, Task, Workload, model_device, shuffled_epochs
from nas.supernets.tasks._minilm import load_minilm, mean_pool, minilm_dir, pad_batch
from nas.supernets.tasks._pydoc_text import SPLITS, paragraphs

__all__ = [
    "MAX_TOKENS",
    "TASK_NAME",
    "WORDPIECE_TASK_NAME",
    "SentenceDistillTask",
    "student_embedding",
    "teacher_embeddings",
    "token_rows",
]

TASK_NAME = "minilm-distill-pydoc"
WORDPIECE_TASK_NAME = "minilm-distill-pydoc-wordpiece"
VOCABS = ("corpus", "wordpiece")
MAX_TOKENS = 64
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_EVAL_BATCH = 64


def student_embedding(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """L2-normalised mean of ``model(ids, mask)`` over real tokens: ``(B, C)``."""
    return F.normalize(mean_pool(model(ids, mask), mask), dim=-1)


def token_rows(texts: Sequence[str], max_tokens: int) -> tuple[tuple[int, ...], ...]:
    """MiniLM's token ids of ``texts``, ``[CLS]`` and ``[SEP]`` included, truncated."""
    _, tokenizer = load_minilm()
    rows = tokenizer.encode_ids(list(texts), max_length=max_tokens)
    return tuple(tuple(r) for r in rows)


def teacher_embeddings(rows: Sequence[Sequence[int]]) -> Tensor:
    """MiniLM's L2-normalised sentence embeddings ``(N, 384)`` of token ``rows``."""
    model, tokenizer = load_minilm()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(rows), _EVAL_BATCH):
            ids, mask = pad_batch(rows[start : start + _EVAL_BATCH], tokenizer.pad_id)
            chunks.append(F.normalize(mean_pool(model(ids, mask), mask), dim=-1))
    return torch.cat(chunks)


@functools.cache
def _token_rows(split: str, max_tokens: int) -> tuple[tuple[int, ...], ...]:
    return token_rows(paragraphs(split), max_tokens)


@functools.cache
def _teacher(split: str, max_tokens: int) -> Tensor:
    """MiniLM's embeddings ``(N, 384)`` of the split's truncated paragraphs."""
    return teacher_embeddings(_token_rows(split, max_tokens))


@TASKS.register(
    TASK_NAME,
    description="distil all-MiniLM-L6-v2 sentence embeddings of Python documentation "
    "paragraphs; accuracy = mean cosine fidelity to the teacher (not a classification "
    "accuracy); needs the optional extra 'minilm'",
)
class SentenceDistillTask(Task):
    """Distil MiniLM's sentence embeddings into a student encoder.

    Args:
        max_tokens: tokens per paragraph, ``[CLS]`` and ``[SEP]`` included.
        vocab: ``"corpus"`` (the training split's ids, renumbered: a small embedding
            table) or ``"wordpiece"`` (MiniLM's own 30,522 ids, for students initialised
            from MiniLM).

    Raises:
        MissingExtraError: the ``minilm`` extra is not installed (one-line message
            naming ``pip install 'nas-platform[minilm]'``).
        ValueError: ``max_tokens`` below 3 or an unknown ``vocab``.
    """

    def __init__(self, *, max_tokens: int = MAX_TOKENS, vocab: str = "corpus") -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 3:
            raise ValueError(f"max_tokens must be an integer >= 3, got {max_tokens!r}")
        if vocab not in VOCABS:
            raise ValueError(f"vocab must be one of {list(VOCABS)}, got {vocab!r}")
        self.name = TASK_NAME if vocab == "corpus" else WORDPIECE_TASK_NAME
        minilm_dir()  # fail early, with the install hint, when the extra is missing
        self.max_tokens = max_tokens
        self._tensors: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        _, tokenizer = load_minilm()
        specials = [tokenizer.token_id(s) for s in SPECIALS]
        seen = sorted({i for row in self._rows("train") for i in row} - set(specials))
        self.vocab: tuple[int, ...] = tuple(specials + seen) if vocab == "corpus" else tuple(
            range(tokenizer.vocab_size))
        """MiniLM id of each student id."""
        self._lookup = torch.full((tokenizer.vocab_size,), SPECIALS.index("[UNK]"),
                                  dtype=torch.long)
        self._lookup[torch.tensor(self.vocab)] = torch.arange(len(self.vocab))
        self.teacher_dim = int(self._targets("validation").shape[1])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- data -----------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Student ``(ids, mask)``, both ``(N, max_tokens)``, for arbitrary texts."""
        _, tokenizer = load_minilm()
        return self._pad(tokenizer.encode_ids(list(texts), max_length=self.max_tokens))

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros((len(rows), self.max_tokens), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = self._lookup[torch.as_tensor(row, dtype=torch.long)]
            mask[i, : len(row)] = 1
        return ids, mask

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids, mask, teacher embeddings)`` of every paragraph of ``split`` (kept)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if split not in self._tensors:
            self._tensors[split] = (*self._pad(self._rows(split)), self._targets(split))
        return self._tensors[split]

    def _rows(self, split: str) -> tuple[tuple[int, ...], ...]:
        """MiniLM's token ids of ``split``'s texts (a subclass reads other texts)."""
        return _token_rows(split, self.max_tokens)

    def _targets(self, split: str) -> Tensor:
        """The teacher's embeddings of ``split``'s texts."""
        return _teacher(split, self.max_tokens)

    # -- the Task contract ----------------------------------------------------------------

    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """Mean cosine fidelity to the teacher on ``split`` (first ``limit`` paragraphs).

        Returns ``{"accuracy": cosine, "cosine": cosine, "loss": 1 - cosine,
        "examples": n}``; ``accuracy`` is the cosine fidelity, not a classification rate.

        Raises:
            ValueError: an unknown split or a non-positive ``limit``.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        self._check_model(model)
        ids, mask, teacher = (t[:limit] for t in self.split_tensors(split))
        was_training = model.training
        model.eval()
        total = 0.0
        with torch.inference_mode():
            for start in range(0, len(ids), _EVAL_BATCH):
                part = slice(start, start + _EVAL_BATCH)
                student = student_embedding(model, ids[part], mask[part])
                total += float((student * teacher[part]).sum())
        model.train(was_training)
        cosine = total / len(ids)
        return {"accuracy": cosine, "cosine": cosine, "loss": 1.0 - cosine,
                "examples": float(len(ids))}

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        """``1 - cosine(student, teacher)``, mean over the batch ``(ids, mask, teacher)``."""
        ids, mask, teacher = batch
        return 1.0 - (student_embedding(model, ids, mask) * teacher).sum(-1).mean()

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], list[int]]:
        """Shuffled epochs over the training paragraphs, ``batch_size`` at a time."""
        return shuffled_epochs(len(self.split_tensors("train")[0]), batch_size=batch_size,
                               generator=generator)

    def load_batch(self, keys: BatchKeys) -> tuple[Tensor, ...]:
        """``(ids, mask, teacher)`` of the training paragraphs ``keys``."""
        ids, mask, teacher = self.split_tensors("train")
        return ids[keys], mask[keys], teacher[keys]

    def workload(self) -> Workload:
        """One paragraph of :data:`MAX_TOKENS` tokens in, one embedding out, batch 1."""
        return Workload(src_len=float(self.max_tokens), tgt_len=1.0, batch=1, beam=1)

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """Embed :meth:`example_inputs`'s paragraph with ``model``."""
        device = model_device(model)
        ids, mask = (t.to(device) for t in self.example_inputs())

        def probe() -> None:
            with torch.inference_mode():
                student_embedding(model, ids, mask)

        return probe

    def example_inputs(self) -> tuple[Tensor, ...]:
        """The first validation paragraph: ``(ids (1, max_tokens), mask (1, max_tokens))``."""
        ids, mask, _ = self.split_tensors("validation")
        return ids[:1].clone(), mask[:1].clone()

    def _check_model(self, model: nn.Module) -> None:
        vocab = getattr(model, "vocab_size", None)
        if vocab is None and hasattr(model, "subnet_config"):
            vocab = model.subnet_config().get("vocab_size")
        if vocab is not None and vocab != self.vocab_size:
            raise ValueError(
                f"the model reads {vocab} token ids but task {self.name} has "
                f"{self.vocab_size} (a different pydoc corpus or tokenizer); retrain with "
                f"nas train"
            )



@TASKS.register(
    WORDPIECE_TASK_NAME,
    description="as minilm-distill-pydoc, on MiniLM's full WordPiece vocabulary (for "
    "students initialised from MiniLM, e.g. the flexibert-minilm supernet)",
)
def wordpiece_task() -> SentenceDistillTask:
    """The distillation task on MiniLM's own token ids."""
    return SentenceDistillTask(vocab="wordpiece")
