"""A user's UTF-8 text as byte-level language modelling (``nas train --supernet
matformer --data PATH``).

``PATH`` is a ``.txt`` file or a folder of ``.txt`` files (sub-folders included, hidden
files and folders skipped). Tokens
are the UTF-8 bytes, as in ``pydoc-lm`` (:class:`~nas.supernets.tasks._lm.ByteLMTask`).

The split follows ``pydoc_data``'s (:mod:`nas.supernets.tasks._pydoc_text`): about
80/10/10 % train/validation/test by a stable sha1 hash of a name,

- of each file's path within the folder when the folder holds several files (a file
  goes whole into one split),
- of each paragraph (blocks separated by blank lines) when there is one file,

so it is the same on every machine and independent of the order files are listed in.
Paragraphs are kept as written (code keeps its indentation) and joined by blank lines,
files in sorted path order. A validation or test paragraph that also occurs in training,
or earlier in the held-out text, is dropped (compared with whitespace collapsed): no
held-out paragraph was seen in training.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from nas.supernets.tasks._lm import ByteLMTask
from nas.supernets.tasks._pydoc_text import SPLITS, split_of
from nas.supernets.tasks._utf8 import read_utf8

__all__ = ["TextLMTask", "text_splits"]

_BLANK_LINES = re.compile(r"\n\s*\n")


class TextLMTask(ByteLMTask):
    """Next-byte prediction on a user's text files (see the module docstring).

    Args:
        path: a ``.txt`` file or a folder of them.
        context: bytes the model sees per window.
        name: the task's name; ``text:<file or folder name>`` when omitted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no ``.txt`` file, bytes that are not UTF-8 (naming the file and
            line), or a split shorter than one training window (saying how much text
            is needed).
    """

    def __init__(self, path: str | Path, *, context: int = 64, name: str | None = None) -> None:
        super().__init__(context)
        self.path = Path(path)
        self.name = name or f"text:{self.path.resolve().name}"
        texts = text_splits(self.path)
        need = context + 2  # one training window and its next byte, with room to draw
        for split, text in texts.items():
            size = len(text.encode("utf-8"))
            if size < need:
                raise ValueError(
                    f"{self.path}: the {split} split holds {size} bytes of text, fewer than "
                    f"the {need} of one window of context {context}; give more text (each "
                    f"held-out split gets about 10 %, so at least {10 * need} bytes in all)"
                )
        self._bytes = {split: torch.frombuffer(bytearray(text.encode("utf-8")),
                                               dtype=torch.uint8).long()
                       for split, text in texts.items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(b)}" for s, b in self._bytes.items())
        return f"TextLMTask({self.name!r}, context={self.context}, bytes: {sizes})"

    def split_bytes(self, split: str) -> torch.Tensor:
        return self._bytes[split]


def text_splits(path: Path) -> dict[str, str]:
    """The text of each split of ``path`` (a ``.txt`` file or a folder of them).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no ``.txt`` file, or bytes that are not UTF-8 (naming file and line).
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise ValueError(f"{path}: the folder holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path} does not exist; give a .txt file or a folder of them")
    by_file = len(files) > 1
    owned: dict[str, list[str]] = {split: [] for split in SPLITS}
    for file in files:
        file_split = split_of(file.relative_to(path).as_posix()) if by_file else None
        for paragraph in _paragraphs(read_utf8(file)):
            owned[file_split or split_of(paragraph)].append(paragraph)
    seen = {_key(p) for p in owned["train"]}
    for split in SPLITS[1:]:
        kept = []
        for paragraph in owned[split]:
            if _key(paragraph) not in seen:
                seen.add(_key(paragraph))
                kept.append(paragraph)
        owned[split] = kept
    return {split: "\n\n".join(paragraphs) for split, paragraphs in owned.items()}


def _paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, as written (blank ones dropped)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [block.strip("\n") for block in _BLANK_LINES.split(text) if block.strip()]


def _key(paragraph: str) -> str:
    return " ".join(paragraph.split())
