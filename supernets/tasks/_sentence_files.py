"""A user's sentences as MiniLM distillation (``nas train --supernet flexibert --data
FILE.csv``).

The CSV's sentences are the column named ``text`` (any case) when the first row holds
such a header, else the first column of every row (the first row included). Every row
has the first row's number of fields; blank rows are skipped; each distinct sentence
is kept once. The split is by a stable sha1 hash of
the sentence, about 80/10/10 % train/validation/test (the rule of
:func:`nas.supernets.tasks._pydoc_text.split_of`), each split ordered by that hash: the
same on every machine and independent of the rows' order. The targets are the same
MiniLM teacher's embeddings as the built-in task's
(:class:`~nas.supernets.tasks._sentence.SentenceDistillTask`), computed once, when the
task is built.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from torch import Tensor

from nas.supernets.tasks._pydoc_text import SPLITS, split_of
from nas.supernets.tasks._sentence import (
    MAX_TOKENS,
    SentenceDistillTask,
    teacher_embeddings,
    token_rows,
)
from nas.supernets.tasks._utf8 import read_utf8

__all__ = ["SentenceFileTask", "read_sentences"]

HEADER = "text"


class SentenceFileTask(SentenceDistillTask):
    """Distil MiniLM's embeddings of a user's sentences (see the module docstring).

    Args:
        path: the CSV file.
        max_tokens: tokens per sentence, ``[CLS]`` and ``[SEP]`` included.
        name: the task's name; ``sentences:<file name>`` when omitted.

    Raises:
        MissingExtraError: the ``minilm`` extra is not installed.
        FileNotFoundError: ``path`` is not a file.
        ValueError: a malformed row, a missing column or an empty cell (naming the file
            and line), or too few sentences to fill every split.
    """

    def __init__(self, path: str | Path, *, max_tokens: int = MAX_TOKENS,
                 name: str | None = None) -> None:
        self.path = Path(path)
        self._sentences = read_sentences(self.path)
        for split, sentences in self._sentences.items():
            if not sentences:
                total = sum(map(len, self._sentences.values()))
                raise ValueError(
                    f"{self.path}: {total} distinct sentences leave the {split} split "
                    f"empty; give more (about 10 % go to each held-out split)"
                )
        self._row_cache: dict[str, tuple[tuple[int, ...], ...]] = {}
        self._target_cache: dict[str, Tensor] = {}
        super().__init__(max_tokens=max_tokens, vocab="corpus")
        self.name = name or f"sentences:{self.path.resolve().name}"
        for split in SPLITS:  # now, not in a DataLoader worker
            self.split_tensors(split)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(t)}" for s, t in self._sentences.items())
        return f"SentenceFileTask({self.name!r}, {sizes})"

    def sentences(self, split: str) -> tuple[str, ...]:
        """The sentences of ``split`` in the order of its examples."""
        return self._sentences[split]

    def _rows(self, split: str) -> tuple[tuple[int, ...], ...]:
        if split not in self._row_cache:
            self._row_cache[split] = token_rows(self._sentences[split], self.max_tokens)
        return self._row_cache[split]

    def _targets(self, split: str) -> Tensor:
        if split not in self._target_cache:
            self._target_cache[split] = teacher_embeddings(self._rows(split))
        return self._target_cache[split]


def read_sentences(path: Path) -> dict[str, tuple[str, ...]]:
    """The distinct sentences of the CSV ``path`` by split, each in hash order.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: bytes that are not UTF-8, a malformed row, a missing column or an
            empty cell (the message names ``FILE:LINE``), or a file without sentences.
    """
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""), strict=True)
    column, fields = 0, 0
    sentences: dict[str, None] = {}  # distinct, in file order
    start = 1  # the line the next row starts on
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise ValueError(f"{path}:{start}: malformed CSV row ({error})") from None
        where, start = f"{path}:{start}", reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if not fields:
            fields = len(row)
            header = [cell.strip().lower() for cell in row]
            if HEADER in header:
                column = header.index(HEADER)
                continue
        if len(row) <= column:
            raise ValueError(f"{where}: the row has no {HEADER!r} column (field "
                             f"{column + 1}); it has {len(row)} field(s)")
        if len(row) != fields:
            raise ValueError(f"{where}: malformed row of {len(row)} fields, the first row "
                             f"has {fields} (quote cells that hold commas)")
        text = row[column].strip()
        if not text:
            raise ValueError(f"{where}: empty {HEADER!r} cell (field {column + 1})")
        sentences.setdefault(text, None)
    if not sentences:
        raise ValueError(f"{path}: no sentences found (a CSV with a 'text' column, or "
                         "sentences in its first column)")
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    for sentence in sorted(sentences, key=_hash):
        by_split[split_of(sentence)].append(sentence)
    return {split: tuple(found) for split, found in by_split.items()}


def _hash(sentence: str) -> tuple[bytes, str]:
    return hashlib.sha1(sentence.encode("utf-8")).digest(), sentence
