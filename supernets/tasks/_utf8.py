"""Reading a user's text files as UTF-8, with errors that point at the bad line.

Python's own decoding error gives a byte offset into a buffer, which a user cannot act
on; :func:`read_utf8` names the file, the line and the column instead.
"""

from __future__ import annotations

import codecs
from pathlib import Path

__all__ = ["read_utf8"]


def read_utf8(path: Path) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: bytes that are not UTF-8 (the message names ``FILE:LINE``).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} at column {column} is not "
            "UTF-8; save the file as UTF-8"
        ) from None
