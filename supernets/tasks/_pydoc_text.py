"""English text that installs offline: Python's own documentation topics (``pydoc_data``).

Every CPython ships ``pydoc_data.topics``: the 79 reference topics ``help()`` shows
(about 465k characters of English prose with code samples). The language-model and
sentence-encoder tasks read it as paragraphs (blocks separated by blank lines).

The split is by topic, a stable hash of its name (sha1): about 80 % train, 10 %
validation and 10 % test. Some topics repeat paragraphs of others (``def`` and
``function``), so a validation or test paragraph that also occurs in training, or in an
earlier topic, is dropped: no held-out paragraph was seen in training.
"""

from __future__ import annotations

import functools
import hashlib
import re

SPLITS = ("train", "validation", "test")
_BLANK_LINES = re.compile(r"\n\s*\n")
_RULE = re.compile(r"^[*=\-~^]{3,}$")


def split_of(topic: str) -> str:
    """The split a topic belongs to (80/10/10 by a stable hash of its name)."""
    bucket = int(hashlib.sha1(topic.encode()).hexdigest(), 16) % 10
    return "validation" if bucket == 0 else "test" if bucket == 1 else "train"


@functools.cache
def topics() -> dict[str, str]:
    """Topic name -> its text, as ``help()`` prints it."""
    from pydoc_data.topics import topics as texts

    return dict(sorted(texts.items()))


@functools.cache
def paragraphs(split: str, *, min_chars: int = 40) -> tuple[str, ...]:
    """The paragraphs of ``split``'s topics in topic order, whitespace collapsed;
    underline rules and paragraphs shorter than ``min_chars`` are dropped.

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return tuple(
        paragraph for paragraph, owner in _owners(min_chars).items() if owner == split
    )


def text(split: str) -> str:
    """The paragraphs of ``split`` joined by blank lines."""
    return "\n\n".join(paragraphs(split))


@functools.cache
def _owners(min_chars: int) -> dict[str, str]:
    """Every distinct paragraph -> its split: training if any training topic holds it,
    else the split of the first topic that does."""
    owners: dict[str, str] = {}
    for name, body in topics().items():
        split = split_of(name)
        for block in _BLANK_LINES.split(body):
            lines = [line for line in block.splitlines() if not _RULE.match(line.strip())]
            paragraph = " ".join(" ".join(lines).split())
            if len(paragraph) >= min_chars and owners.get(paragraph) != "train":
                owners[paragraph] = "train" if split == "train" else owners.get(paragraph, split)
    return owners
