"""Progress bars that read well in a terminal and in a log.

On a terminal a bar redraws in place. When stderr is a file or a pipe (CI, ``nohup``,
a job scheduler), ``\\r`` redraws pile up on one endless line; there the bar instead
prints one plain line at most every :data:`LOG_INTERVAL_S` seconds, and a last one when
it closes. Every long loop of the platform takes its bar from :func:`progress_bar`.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

LOG_INTERVAL_S = 5.0
"""Seconds between two lines of a bar written to a log."""
LOG_WIDTH = 100
"""Columns of a bar's line in a log (no terminal to ask)."""


class _Lines:
    """A stream for tqdm that writes each redraw as its own line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **options: Any) -> Any:
    """A tqdm bar on stderr (``options`` as tqdm's), redrawn in place on a terminal and
    as a line every :data:`LOG_INTERVAL_S` seconds otherwise."""
    from tqdm.auto import tqdm

    stream = sys.stderr
    if not options.get("disable") and not stream.isatty():
        options = {**options, "file": _Lines(stream), "mininterval": LOG_INTERVAL_S,
                   "ncols": LOG_WIDTH, "dynamic_ncols": False, "ascii": True}
    return tqdm(iterable, **options)
