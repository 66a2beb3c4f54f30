"""A user's latency measurements of one supernet's subnets, read from a CSV and checked.

Two layouts are read: a ``nas profile`` CSV (a ``config_json`` column keys each row) or
any CSV with one column per gene of the space (inactive genes may be left empty) and a
latency column. A subnet measured several times keeps the median of its figures.
Every error names the file and the first bad column or line, and says what would be
right.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas._files import file_sha256, read_text
from nas._space import Config, Gene, SearchSpace, Value
from nas.hardware._latency_dataset import _some

LATENCY_COLUMN = "latency_ms"
CONFIG_COLUMN = "config_json"
MAX_ROWS = 100_000
"""More rows than any device measurement campaign makes; bounds what a file may ask."""


@dataclass(frozen=True)
class Measurements:
    """Distinct subnets of one space and their measured latency (ms), in file order."""

    path: Path
    sha256: str
    configs: tuple[Config, ...]
    latency_ms: np.ndarray
    rows: int
    """Data rows in the file (more than ``len(configs)`` when a subnet repeats)."""

    def __len__(self) -> int:
        return len(self.configs)


def read_measurements(path: str | Path, space: SearchSpace, *,
                      column: str = LATENCY_COLUMN) -> Measurements:
    """The measurements of ``space``'s subnets in the CSV at ``path``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: no header, no latency column, neither ``config_json`` nor every
            gene column, a row that is not a config of the space or whose latency is
            not a positive number (naming the line), or more than :data:`MAX_ROWS` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no measurements CSV at {path}")
    reader = csv.DictReader(read_text(path, expected="a CSV of latency measurements")
                            .splitlines())
    header = tuple(reader.fieldnames or ())
    if not header:
        raise ValueError(f"{path} is empty: give a CSV with a header row")
    if column not in header:
        raise ValueError(f"{path} has no {column!r} column (columns: {_some(header)}); name "
                         "the latency column in ms with --latency-column")
    if CONFIG_COLUMN not in header:
        _check_gene_columns(path, header, space)
    figures: dict[Config, list[float]] = {}
    rows = 0
    try:
        for row in reader:
            rows += 1
            if rows > MAX_ROWS:
                raise ValueError(f"{path} has more than {MAX_ROWS} rows; give at most that many")
            line = reader.line_num
            config = _config_of(path, line, row, space)
            figures.setdefault(config, []).append(_latency(path, line, row[column], column))
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num} is not valid CSV: {err}") from None
    return Measurements(path, file_sha256(path), tuple(figures),
                        np.array([statistics.median(v) for v in figures.values()]), rows)


def _check_gene_columns(path: Path, header: tuple[str, ...], space: SearchSpace) -> None:
    missing = [g.name for g in space.genes if g.name not in header]
    if missing:
        raise ValueError(
            f"{path} has neither a {CONFIG_COLUMN!r} column nor every gene of space "
            f"{space.name!r}: column {missing[0]!r} is missing (the genes are "
            f"{_some([g.name for g in space.genes])}; `nas profile` writes such a file)")


def _config_of(path: Path, line: int, row: Mapping[str, str | None],
               space: SearchSpace) -> Config:
    try:
        if CONFIG_COLUMN in row:
            return space.from_json(row[CONFIG_COLUMN] or "")
        values = {g.name: _value(g, row[g.name]) for g in space.genes
                  if (row[g.name] or "").strip()}
        return space.config(values)
    except ValueError as err:
        raise ValueError(f"{path} line {line} is not a subnet of space {space.name!r}: "
                         f"{err}") from None


def _value(gene: Gene, text: str | None) -> Value:
    """The choice of ``gene`` that ``text`` spells (``512`` and ``512.0`` alike)."""
    text = (text or "").strip()
    for choice in gene.choices:
        if text == str(choice):
            return choice
        if gene.is_numeric:
            try:
                if float(text) == float(choice):
                    return choice
            except ValueError:
                break
    raise ValueError(f"gene {gene.name!r} must be one of {list(gene.choices)}, got {text!r}")


def _latency(path: Path, line: int, text: str | None, column: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{path} line {line}: {column} must be a positive latency in ms, got "
                         f"{text!r}")
    return value
