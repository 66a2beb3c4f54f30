"""Feature encoders: configs, NAS-Bench-201 arch strings and plain CSV tables -> floats.

An encoder is fitted on the training table (``TableFeatures`` picks its columns there),
then ``transform`` turns any table with the same inputs into ``X`` (n, d). ``to_spec`` /
``encoder_from_spec`` store an encoder as JSON next to a saved predictor, so ``eval``
encodes new rows exactly as ``fit`` did.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nas._files import read_text
from nas._registry import Registry
from nas._space import SPACE_FEATURES, Config, SearchSpace


@dataclass(frozen=True)
class CSVTable:
    """A CSV read as strings: its header, its rows (in file order) and the file line of
    each row (for error messages; row ``i`` is line ``i + 2`` when not given)."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    lines: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def line(self, i: int) -> int:
        """The file line of row ``i``."""
        return self.lines[i] if self.lines else i + 2

    def subset(self, indices: Iterable[int]) -> CSVTable:
        """The rows ``indices`` as a table that still names their file lines."""
        indices = list(indices)
        return CSVTable(self.path, self.columns, tuple(self.rows[i] for i in indices),
                        tuple(self.line(i) for i in indices))

    def column(self, name: str) -> np.ndarray:
        """A numeric column as floats.

        Raises:
            ValueError: a missing column (listing the columns) or a non-numeric value.
        """
        self.require(name)
        out = np.empty(len(self.rows))
        for i, row in enumerate(self.rows):
            out[i] = _as_float(row[name], f"{self.path} line {self.line(i)}: column {name!r}")
        return out

    def target_columns(self, expr: str) -> tuple[str, ...]:
        """The columns a target names: ``expr`` itself where it is a column, else the
        ``+``-separated names of a sum (``latency_mean_encoder+latency_mean_decoder``).

        Raises:
            ValueError: a named column is missing (listing the columns).
        """
        names = (expr,) if expr in self.columns else tuple(n.strip() for n in expr.split("+"))
        self.require(*names)
        return names

    def target(self, expr: str) -> np.ndarray:
        """A target as floats: one numeric column, or the sum of the columns ``a+b+...``.

        Raises:
            ValueError: a missing column (listing the columns) or a non-numeric value.
        """
        return np.sum([self.column(c) for c in self.target_columns(expr)], axis=0)

    def require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ValueError(f"{self.path} has no column {', '.join(map(repr, missing))}; "
                             f"its columns are: {', '.join(self.columns)}")

    def numeric_columns(self) -> list[str]:
        """Columns whose every value parses as a finite float (the others hold text).

        Raises:
            ValueError: a column of numbers with a value that is not one, naming its line.
        """
        numeric = []
        for column in self.columns:
            ok = [_is_float(row[column]) for row in self.rows]
            if all(ok):
                numeric.append(column)
            elif any(ok):
                i = ok.index(False)
                raise ValueError(f"{self.path} line {self.line(i)}: column {column!r} holds "
                                 f"{self.rows[i][column]!r}, not a finite number like its "
                                 "other values")
        return numeric


def _is_float(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


def _as_float(text: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where} is not a finite number: {text!r}")
    return value


def read_csv(path: str | Path) -> CSVTable:
    """Read a CSV with a header row.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an empty file, no header, or rows of the wrong width.
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"no CSV file at {path}")
    reader = csv.DictReader(read_text(path, expected="a CSV file").splitlines())
    try:
        if not reader.fieldnames:
            raise ValueError(f"{path} is empty (no header row)")
        columns = tuple(reader.fieldnames)
        rows, lines = [], []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"{path} line {reader.line_num} has "
                                 f"a different number of fields than the header")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num} is not valid CSV: {err}") from None
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return CSVTable(path, columns, tuple(rows), tuple(lines))


class Encoder(Protocol):
    """What the CLI needs from a feature encoder."""

    feature_names: tuple[str, ...]
    feature_sets: dict[str, list[int]]  # column subsets for ``auto`` to try too

    def fit(self, table: CSVTable) -> Encoder: ...
    def transform(self, table: CSVTable) -> np.ndarray: ...
    def row_keys(self, table: CSVTable) -> list[str]: ...
    def to_spec(self) -> dict[str, Any]: ...


ENCODERS: Registry[Encoder] = Registry("space")
"""Feature spaces of ``nas predictor fit --space``: factories ``(target, drop, **opts)``."""


class SpaceFeatures:
    """A search space's own features (:meth:`SearchSpace.to_features`): one-hot for
    categorical genes, the value for numeric ones."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.space.feature_names

    def transform_configs(self, configs: Iterable[Config | Mapping[str, Any]]) -> np.ndarray:
        rows = [self.space.to_features(self.space.config(c)) for c in configs]
        if not rows:
            return np.zeros((0, len(self.feature_names)))
        return np.stack(rows)


# -- NAS-Bench-201 -----------------------------------------------------------------------

NB201_KEY = "arch_str"


def _effective_ops(ops: Sequence[str]) -> list[str]:
    """The operations on edges that lie on an input-to-output path of non-``none`` edges
    (the others never influence the output, nor, after pruning, the latency)."""
    from nas.supernets.nb201 import EDGES

    live = {edge: op for edge, op in zip(EDGES, ops) if op != "none"}
    from_input = {0}
    for to in (1, 2, 3):
        if any((to, f) in live and f in from_input for f in range(to)):
            from_input.add(to)
    to_output = {3}
    for frm in (2, 1, 0):
        if any((t, frm) in live and t in to_output for t in range(frm + 1, 4)):
            to_output.add(frm)
    return [op for (t, f), op in live.items() if f in from_input and t in to_output]


class NB201Features:
    """NAS-Bench-201 cells from the ``arch_str`` column: one-hot per edge (30 floats),
    plus with ``proxies`` the count of each operation on live edges (edges on an
    input-to-output path) and whether the cell is degenerate (6 floats), plus with
    ``counts`` the count of each operation over all six edges (5 floats).

    With 20 measured cells, 30 one-hot columns are too many to fit: a ridge on the five
    operation counts alone ranks latency far better. :attr:`feature_sets` names such
    small subsets, for ``auto`` to try alongside the full encoding.
    """

    def __init__(self, *, proxies: bool = True, counts: bool = False) -> None:
        self.proxies = proxies
        self.counts = counts

    @property
    def feature_names(self) -> tuple[str, ...]:
        from nas.supernets.nb201 import NB201_SPACE, OPERATIONS

        names = NB201_SPACE.feature_names
        if self.proxies:
            names += tuple(f"live.{op}" for op in OPERATIONS) + ("degenerate",)
        if self.counts:
            names += tuple(f"ops.{op}" for op in OPERATIONS)
        return names

    @property
    def feature_sets(self) -> dict[str, list[int]]:
        """Named column subsets for few samples: ``op-counts`` and, with proxies,
        ``op-counts+live`` (adding the live counts and the degenerate flag)."""
        if not self.counts:
            return {}
        names = self.feature_names
        ops = [i for i, name in enumerate(names) if name.startswith("ops.")]
        sets = {"op-counts": ops}
        if self.proxies:
            live = [i for i, name in enumerate(names)
                    if name.startswith("live.") or name == "degenerate"]
            sets["op-counts+live"] = ops + live
        return sets

    def fit(self, table: CSVTable) -> NB201Features:
        table.require(NB201_KEY)
        return self

    def encode(self, arch_strs: Sequence[str]) -> np.ndarray:
        """Features of arch strings, shape (n, 30), plus 6 with proxies, plus 5 with
        counts."""
        from nas.supernets.nb201 import (
            GENE_NAMES,
            NB201_SPACE,
            OPERATIONS,
            arch_str_to_config,
        )

        out = []
        for s in arch_strs:
            config = arch_str_to_config(NB201_SPACE, s)
            row = NB201_SPACE.to_features(config)
            if self.proxies:
                live = _effective_ops([config[g] for g in GENE_NAMES])
                counts = [float(live.count(op)) for op in OPERATIONS]
                row = np.concatenate([row, counts, [0.0 if live else 1.0]])
            if self.counts:
                ops = [config[g] for g in GENE_NAMES]
                row = np.concatenate([row, [float(ops.count(op)) for op in OPERATIONS]])
            out.append(row)
        return np.stack(out)

    def transform(self, table: CSVTable) -> np.ndarray:
        table.require(NB201_KEY)
        return self.encode([r[NB201_KEY] for r in table.rows])

    def row_keys(self, table: CSVTable) -> list[str]:
        return [r[NB201_KEY] for r in table.rows]

    def to_spec(self) -> dict[str, Any]:
        return {"space": "nb201", "proxies": self.proxies, "counts": self.counts}


class TableFeatures:
    """Every numeric column except the target's (every column of a sum ``a+b``) and
    ``drop`` (a plain feature table, e.g. other devices' latencies as features of this
    device's latency)."""

    def __init__(self, *, target: str, drop: Sequence[str] = ()) -> None:
        self.target = target
        self.drop = tuple(drop)

    @property
    def feature_sets(self) -> dict[str, list[int]]:
        """None: the user chose a table's columns; ``auto`` tries them together."""
        return {}

    def fit(self, table: CSVTable) -> TableFeatures:
        target_columns = table.target_columns(self.target)
        unknown = [c for c in self.drop if c not in table.columns]
        if unknown:
            raise ValueError(f"--drop names columns that {table.path} lacks: "
                             f"{', '.join(unknown)}; its columns are: {', '.join(table.columns)}")
        skip = {*target_columns, *self.drop}
        self.columns_ = tuple(c for c in table.numeric_columns() if c not in skip)
        if not self.columns_:
            raise ValueError(f"{table.path} has no numeric feature column besides the target "
                             f"{self.target!r} and the dropped ones")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.columns_

    def transform(self, table: CSVTable) -> np.ndarray:
        table.require(*self.columns_)
        return np.stack([table.column(c) for c in self.columns_], axis=1)

    def row_keys(self, table: CSVTable) -> list[str]:
        return [str(i) for i in range(len(table))]

    def to_spec(self) -> dict[str, Any]:
        return {"space": "table", "target": self.target, "drop": list(self.drop),
                "columns": list(self.columns_)}


@ENCODERS.register("nb201", description="NAS-Bench-201 cells from the arch_str column")
def _nb201(*, target: str, drop: Sequence[str] = (), proxies: bool = True) -> NB201Features:
    return NB201Features(proxies=proxies, counts=True)


@ENCODERS.register("table", description="every numeric column but the target's and --drop")
def _table(*, target: str, drop: Sequence[str] = (), proxies: bool = True) -> TableFeatures:
    return TableFeatures(target=target, drop=drop)


def create_encoder(space: str, *, target: str, drop: Sequence[str] = (),
                   proxies: bool = True) -> Encoder:
    """The encoder of ``--space`` (``nb201`` or ``table``), unfitted.

    Raises:
        UnknownNameError: an unknown space (the message lists the known ones).
    """
    return ENCODERS.create(space, target=target, drop=drop, proxies=proxies)


def encoder_from_spec(spec: Mapping[str, Any]) -> Encoder:
    """Rebuild a fitted encoder from :meth:`to_spec`'s JSON."""
    if spec.get("space") == "table":
        enc = TableFeatures(target=spec["target"], drop=spec.get("drop", ()))
        enc.columns_ = tuple(spec["columns"])
        return enc
    if spec.get("space") == "nb201":
        # Predictors saved before the operation counts existed have no "counts" key.
        return NB201Features(proxies=bool(spec.get("proxies", True)),
                             counts=bool(spec.get("counts", False)))
    raise ValueError(f"unknown feature space in the predictor's files: {spec.get('space')!r}")


@SPACE_FEATURES.register("nb201", description="one-hot edges + live operation counts")
def nb201_features(configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Predictor features of cells: one-hot per edge, the count of each operation on
    live edges (on an input-to-output path) and whether the cell is degenerate; a
    search's predictors rank cells far better with them than with the one-hot alone."""
    from nas.supernets.nb201 import config_to_arch_str

    if not configs:
        return np.zeros((0, len(NB201Features(proxies=True).feature_names)))
    return NB201Features(proxies=True).encode([config_to_arch_str(c) for c in configs])
