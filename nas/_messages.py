"""One-line messages: what a user sees of an error is its first line."""

from __future__ import annotations


def one_line(error: BaseException | str) -> str:
    """The first non-empty line of ``error``'s text; an exception without text gives its
    type's name."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
