"""NAS-Bench-201 as a tabular benchmark: the cell space, a lookup table and its true front.

NAS-Bench-201 (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020) fixes a cell of four nodes; each of the six edges
``j <- i`` (``i < j``) carries one of five operations, so the space has 5**6 = 15,625
cells. Every cell has been trained and measured, so a search over it costs lookups
only, and the *true* Pareto front is known exactly: a search algorithm's result can be
scored by how much hypervolume it leaves on the table (:func:`hv_gap`).

Genes are named ``edge.<j><-<i>``: the operation on the edge into node ``j`` from node
``i``, in the order NAS-Bench-201 strings list them::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     1<-0   2<-0 2<-1   3<-0 3<-1 3<-2

Degenerate cells (the output node unreachable through non-``none`` edges; they score
chance accuracy) stay in the space, as they do in the benchmark.

The shipped table (``data/nb201_cifar_latency.csv``, provenance in
``data/PROVENANCE.md``) holds test accuracies on CIFAR-10, CIFAR-100 and ImageNet16-120
(percentages) and latencies in ms on five devices (HELP, HW-NAS-Bench).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas._evaluator import FunctionEvaluator
from nas._pareto import hypervolume, pareto_front
from nas._registry import UnknownNameError
from nas._space import Config, Gene, SearchSpace
from nas._tabular import TABLES, get_table, list_tables

OPERATIONS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""(to node, from node) of each gene, in gene order (the order of arch strings)."""

N_CELLS = len(OPERATIONS) ** len(EDGES)
ARCH_STR_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op in " + ", ".join(OPERATIONS)
DEFAULT_CSV = Path(__file__).resolve().parents[1] / "data" / "nb201_cifar_latency.csv"
DEFAULT_DATASET = "acc_cifar10"
REFERENCE = 1.1
"""Reference point of :func:`hv_gap` on each objective normalised to the true front."""

_OP_INDEX = {op: i for i, op in enumerate(OPERATIONS)}
_POWERS = len(OPERATIONS) ** np.arange(len(EDGES))  # choice index k of gene g -> k * 5**g
_CSV_FORM = (
    "a CSV with an 'arch_str' column (" + ARCH_STR_FORM + "), one or more 'acc_<dataset>' "
    "columns (test accuracy in percent) and one or more 'lat_<device>' columns (latency in ms)"
)


def gene_name(to: int, frm: int) -> str:
    """The gene of the edge into node ``to`` from node ``frm``, e.g. ``edge.2<-1``."""
    return f"edge.{to}<-{frm}"


def _make_space() -> SearchSpace:
    return SearchSpace("nb201", [Gene(gene_name(j, i), OPERATIONS) for j, i in EDGES])


NB201_SPACE: SearchSpace = _make_space()
"""The NAS-Bench-201 cell space: six genes ``edge.j<-i``, five operations each."""

GENE_NAMES: tuple[str, ...] = NB201_SPACE.names


# -- arch strings ----------------------------------------------------------------------


def config_to_arch_str(config: Mapping[str, Any]) -> str:
    """The NAS-Bench-201 string of a cell, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

    Raises:
        ValueError: ``config`` is not a valid config of :data:`NB201_SPACE`.
    """
    values = NB201_SPACE.config(config)
    nodes = []
    for to in (1, 2, 3):
        ops = [f"{values[gene_name(to, frm)]}~{frm}" for frm in range(to)]
        nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)


def arch_str_to_config(space: SearchSpace, s: str) -> Config:
    """The config of a NAS-Bench-201 string (inverse of :func:`config_to_arch_str`).

    Args:
        space: the space to build the config in (:data:`NB201_SPACE` or one with the
            same genes).
        s: e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|...``.

    Raises:
        ValueError: ``s`` is not of the form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` with
            the five NAS-Bench-201 operations; the message names ``s``.
    """
    return space.config(dict(zip(GENE_NAMES, _parse_ops(s), strict=True)))


def _parse_ops(s: str) -> list[str]:
    """The six operations of an arch string, in gene order."""
    if not isinstance(s, str):
        raise ValueError(f"arch string must be a str of the form {ARCH_STR_FORM}, got {s!r}")
    nodes = s.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(
            f"arch string {s!r} must have 3 nodes joined by '+', of the form {ARCH_STR_FORM}"
        )
    ops: list[str] = []
    for to, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"arch string {s!r}: node {to} {node!r} must start and end with "
                             f"'|' (the form is {ARCH_STR_FORM})")
        items = node[1:-1].split("|")
        if len(items) != to:
            raise ValueError(f"arch string {s!r}: node {to} must have {to} inputs, got "
                             f"{len(items)} (the form is {ARCH_STR_FORM})")
        for frm, item in enumerate(items):
            op, _, source = item.partition("~")
            if op not in _OP_INDEX or source != str(frm):
                raise ValueError(f"arch string {s!r}: {item!r} must be op~{frm} with op in "
                                 f"{', '.join(OPERATIONS)} (the form is {ARCH_STR_FORM})")
            ops.append(op)
    return ops


def cell_code(config: Mapping[str, Any] | str) -> int:
    """The cell's position in base 5 (gene ``g``'s operation index times ``5**g``).

    A dense integer in ``[0, 15625)`` used to index the table; not NAS-Bench-201's
    ``arch_idx``, whose order is the benchmark's own.
    """
    ops = _parse_ops(config) if isinstance(config, str) else _ops_of(config)
    return int(sum(_OP_INDEX[op] * int(p) for op, p in zip(ops, _POWERS, strict=True)))


def _ops_of(config: Mapping[str, Any]) -> list[str]:
    try:
        ops = [config[name] for name in GENE_NAMES]
    except KeyError as err:
        raise ValueError(f"config {dict(config)!r} has no gene {err.args[0]!r}; the nb201 "
                         f"genes are {list(GENE_NAMES)}") from None
    bad = [op for op in ops if op not in _OP_INDEX]
    if bad or len(config) != len(GENE_NAMES):
        NB201_SPACE.config(config)  # raises with the space's uniform message
    return ops


def is_degenerate(config: Mapping[str, Any] | str) -> bool:
    """Whether no path of non-``none`` edges joins the input (node 0) to the output
    (node 3): the cell outputs zeros and trains to chance accuracy."""
    ops = _parse_ops(config) if isinstance(config, str) else _ops_of(config)
    op_of = dict(zip(EDGES, ops, strict=True))
    reached = {0}
    for to in (1, 2, 3):
        if any(op_of[(to, frm)] != "none" and frm in reached for frm in range(to)):
            reached.add(to)
    return 3 not in reached


# -- the table -------------------------------------------------------------------------


class NB201Table:
    """Accuracies and latencies of NAS-Bench-201 cells, looked up by config.

    Build one with :meth:`default` (the shipped table) or :meth:`from_csv`. Rows keep
    the CSV's order; :attr:`codes` maps each row to its cell and an index array maps
    cells back to rows, so that lookups of many cells are one numpy gather.

    A user table may hold a subset of the cells; looking up a cell it lacks raises.

    Attributes:
        path: the CSV it was read from.
        sha256: the hash of that file (names the table in evaluator fingerprints).
        arch_strs: the arch string of each row.
        codes: :func:`cell_code` of each row, shape ``(n,)``.
        default_dataset: the accuracy column used when none is named (CIFAR-10).
    """

    default_dataset: str = DEFAULT_DATASET

    def __init__(
        self,
        *,
        path: Path,
        sha256: str,
        arch_strs: Sequence[str],
        codes: np.ndarray,
        accuracies: Mapping[str, np.ndarray],
        latencies: Mapping[str, np.ndarray],
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.arch_strs = tuple(arch_strs)
        self.codes = np.asarray(codes, dtype=np.int64)
        self._acc = {name: np.asarray(v, dtype=float) for name, v in accuracies.items()}
        self._lat = {name: np.asarray(v, dtype=float) for name, v in latencies.items()}
        self._row_of_code = np.full(N_CELLS, -1, dtype=np.int64)
        self._row_of_code[self.codes] = np.arange(len(self.codes))
        self._fronts: dict[tuple[str, str], np.ndarray] = {}
        self._cache: dict[tuple[str, str, str], Any] = {}  # for module helpers (hv_gap)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls) -> NB201Table:
        """The shipped table of all 15,625 cells (read once per process)."""
        return _default_table()

    @classmethod
    def from_csv(cls, path: str | Path) -> NB201Table:
        """Read a table from ``path``: an ``arch_str`` column, ``acc_<dataset>`` columns
        in percent and ``lat_<device>`` columns in ms; other columns are ignored.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: a missing column, a row that does not parse, an accuracy outside
                [0, 100], a negative latency, or an arch string that is malformed or
                repeated; the message names the file, the line and the expected form.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"nb201 table {path}: no such file; expected {_CSV_FORM}")
        data = path.read_bytes()
        text = data.decode("utf-8-sig", errors="replace")
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if not header:
            raise ValueError(f"nb201 table {path}: the file is empty; expected {_CSV_FORM}")
        header = [h.strip() for h in header]
        columns = _columns(path, header)
        return cls(path=path, sha256=hashlib.sha256(data).hexdigest(),
                   **_read_rows(path, reader, header, columns))

    # -- names -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"NB201Table({str(self.path)!r}, {len(self)} cells)"

    @property
    def space(self) -> SearchSpace:
        return NB201_SPACE

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices with latencies, from the ``lat_<device>`` columns (``raspi4``, ...)."""
        return tuple(self._lat)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Accuracy columns, ``acc_<dataset>`` (``acc_cifar10``, ...)."""
        return tuple(self._acc)

    def device(self, name: str) -> str:
        """``name`` checked against :attr:`devices` (``lat_raspi4`` reads as ``raspi4``).

        Raises:
            UnknownNameError: not a device of this table; the message lists them.
        """
        key = name.removeprefix("lat_") if isinstance(name, str) else name
        if key not in self._lat:
            raise UnknownNameError(f"unknown device {name!r} in nb201 table {self.path}; "
                                   f"known: {', '.join(self.devices)}")
        return key

    def dataset(self, name: str) -> str:
        """``name`` checked against :attr:`datasets` (``cifar10`` reads as ``acc_cifar10``).

        Raises:
            UnknownNameError: not a dataset of this table; the message lists them.
        """
        key = name if not isinstance(name, str) or name.startswith("acc_") else f"acc_{name}"
        if key not in self._acc:
            raise UnknownNameError(f"unknown dataset {name!r} in nb201 table {self.path}; "
                                   f"known: {', '.join(self.datasets)}")
        return key

    # -- lookups -----------------------------------------------------------------------

    def rows(self, cells: Iterable[Mapping[str, Any] | str] | np.ndarray) -> np.ndarray:
        """Row indices of ``cells``: configs, arch strings, or an ``(n, 6)`` int array of
        choice indices (``SearchSpace.to_vector``; the fast path, fully vectorised).

        Raises:
            ValueError: a malformed cell, or one this table has no row for.
        """
        if isinstance(cells, np.ndarray) and cells.ndim == 2:
            codes = self._codes_of_vectors(cells)
        else:
            codes = np.fromiter((cell_code(c) for c in cells), dtype=np.int64)
        rows = self._row_of_code[codes]
        if (rows < 0).any():
            missing = int(codes[np.argmax(rows < 0)])
            raise ValueError(f"nb201 table {self.path} has no row for cell "
                             f"{self._arch_str_of_code(missing)}")
        return rows

    def accuracy(self, rows: np.ndarray, *, dataset: str = DEFAULT_DATASET) -> np.ndarray:
        """Accuracy as a fraction in [0, 1] (the table's percentage / 100) of ``rows``."""
        return self._acc[self.dataset(dataset)][rows] / 100.0

    def latency_ms(self, rows: np.ndarray, *, device: str) -> np.ndarray:
        """Latency in ms on ``device`` of ``rows``."""
        return self._lat[self.device(device)][rows]

    def lookup(
        self,
        config: Mapping[str, Any] | str,
        *,
        device: str | None = None,
        dataset: str = DEFAULT_DATASET,
    ) -> dict[str, float]:
        """``{"accuracy": fraction, "latency_ms": ms}`` of one cell (``latency_ms`` only
        when ``device`` is given).

        Raises:
            ValueError: a malformed cell or one the table lacks; an unknown device or
                dataset (:class:`~nas.UnknownNameError`, listing the known ones).
        """
        metrics = self.lookup_many([config], device=device, dataset=dataset)
        return {name: float(values[0]) for name, values in metrics.items()}

    def lookup_many(
        self,
        cells: Iterable[Mapping[str, Any] | str] | np.ndarray,
        *,
        device: str | None = None,
        dataset: str = DEFAULT_DATASET,
    ) -> dict[str, np.ndarray]:
        """:meth:`lookup` of many cells at once: one array per metric."""
        rows = self.rows(cells)
        metrics = {"accuracy": self.accuracy(rows, dataset=dataset)}
        if device is not None:
            metrics["latency_ms"] = self.latency_ms(rows, device=device)
        return metrics

    def is_degenerate(self) -> np.ndarray:
        """Per row, whether the cell is degenerate (see :func:`is_degenerate`)."""
        return np.array([is_degenerate(s) for s in self.arch_strs], dtype=bool)

    # -- search ------------------------------------------------------------------------

    def evaluator(
        self, device: str, dataset: str = DEFAULT_DATASET, *, missing: str = "raise"
    ) -> FunctionEvaluator:
        """An evaluator for :func:`nas.run_search`: metrics ``accuracy`` (fraction) and
        ``latency_ms`` on ``device``, by lookup. Its fingerprint names the table's file
        hash, the dataset and the device, so studies never mix tables or devices.

        Args:
            device: the latency column.
            dataset: the accuracy column.
            missing: what a cell the table lacks (a user table of a subset) gets:
                ``"raise"`` a ValueError, ``"nan"`` NaN metrics (the study stores it
                as a failed trial, which counts as evaluated but scores nothing).

        Raises:
            UnknownNameError: an unknown device or dataset.
            ValueError: ``missing`` is neither ``"raise"`` nor ``"nan"``.
        """
        if missing not in ("raise", "nan"):
            raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
        device = self.device(device)
        dataset = self.dataset(dataset)
        acc = self._acc[dataset] / 100.0
        lat = self._lat[device]

        def metrics(config: Config) -> dict[str, float]:
            if missing == "nan" and self._row_of_code[cell_code(config)] < 0:
                return {"accuracy": float("nan"), "latency_ms": float("nan")}
            row = int(self.rows([config])[0])
            return {"accuracy": float(acc[row]), "latency_ms": float(lat[row])}

        fingerprint = f"nb201-table:{self.sha256[:16]}|{dataset}|lat_{device}"
        return FunctionEvaluator(NB201_SPACE, metrics, fingerprint=fingerprint)

    def objectives(self, *, device: str, dataset: str = DEFAULT_DATASET) -> np.ndarray:
        """Per row, ``(error, latency_ms)`` with error ``1 - accuracy``: shape ``(n, 2)``,
        minimisation form."""
        rows = np.arange(len(self))
        return np.column_stack([1.0 - self.accuracy(rows, dataset=dataset),
                                self.latency_ms(rows, device=device)])

    def front_rows(self, *, device: str, dataset: str = DEFAULT_DATASET) -> np.ndarray:
        """Rows of the exact Pareto front of (error, latency on ``device``), ascending;
        cached per (device, dataset)."""
        key = (self.device(device), self.dataset(dataset))
        if key not in self._fronts:
            self._fronts[key] = _front_2d(self.objectives(device=key[0], dataset=key[1]))
        return self._fronts[key]

    def hv_gap(
        self,
        found: Iterable[Mapping[str, Any] | str] | np.ndarray,
        *,
        device: str,
        dataset: str = DEFAULT_DATASET,
    ) -> float:
        """:func:`hv_gap` of ``found`` against this table."""
        return hv_gap(found, self, device=device, dataset=dataset)

    def true_front_found(
        self,
        found: Iterable[Mapping[str, Any] | str] | np.ndarray,
        *,
        device: str,
        dataset: str = DEFAULT_DATASET,
    ) -> int:
        """:func:`true_front_found` of ``found`` against this table."""
        return true_front_found(found, self, device=device, dataset=dataset)

    # -- helpers -----------------------------------------------------------------------

    def _codes_of_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.shape[1:] != (len(EDGES),) or not np.issubdtype(vectors.dtype, np.integer):
            raise ValueError(f"cell vectors must be an int array of shape (n, {len(EDGES)}), "
                             f"got {vectors.dtype} {vectors.shape}")
        if vectors.size and (vectors.min() < 0 or vectors.max() >= len(OPERATIONS)):
            raise ValueError(f"cell vectors must hold operation indices in 0..{len(OPERATIONS)-1}"
                             f", got values in {vectors.min()}..{vectors.max()}")
        return vectors.astype(np.int64) @ _POWERS

    @staticmethod
    def _arch_str_of_code(code: int) -> str:
        ops = [OPERATIONS[(code // int(p)) % len(OPERATIONS)] for p in _POWERS]
        return config_to_arch_str(dict(zip(GENE_NAMES, ops, strict=True)))


@functools.lru_cache(maxsize=1)
def _default_table() -> NB201Table:
    return NB201Table.from_csv(DEFAULT_CSV)


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    """Column positions of ``arch_str`` and of the ``acc_*`` / ``lat_*`` columns."""
    if "arch_str" not in header:
        raise ValueError(f"nb201 table {path}: no 'arch_str' column (columns {header}); "
                         f"expected {_CSV_FORM}")
    if len(set(header)) != len(header):
        raise ValueError(f"nb201 table {path}: a column is named twice in {header}")
    positions = {name: i for i, name in enumerate(header)}
    for prefix, what in (("acc_", "accuracy"), ("lat_", "latency")):
        if not any(name.startswith(prefix) and len(name) > len(prefix) for name in header):
            raise ValueError(f"nb201 table {path}: no {what} column ({prefix}<name>) in "
                             f"{header}; expected {_CSV_FORM}")
    return {name: i for name, i in positions.items()
            if name == "arch_str" or (name[:4] in ("acc_", "lat_") and len(name) > 4)}


def _read_rows(
    path: Path, reader: Iterable[list[str]], header: list[str], columns: dict[str, int]
) -> dict[str, Any]:
    """Parse and validate the data rows (line numbers count the header as line 1)."""
    arch_strs: list[str] = []
    codes: list[int] = []
    values: dict[str, list[float]] = {n: [] for n in columns if n != "arch_str"}
    seen: dict[int, int] = {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"nb201 table {path}, line {line}: {len(row)} fields, the header "
                             f"has {len(header)}")
        arch = row[columns["arch_str"]].strip()
        try:
            code = cell_code(arch)
        except ValueError as err:
            raise ValueError(f"nb201 table {path}, line {line}: {err}") from None
        if code in seen:
            raise ValueError(f"nb201 table {path}, line {line}: arch string {arch!r} repeats "
                             f"line {seen[code]}; each cell must appear once")
        seen[code] = line
        arch_strs.append(arch)
        codes.append(code)
        for name, values_of in values.items():
            values_of.append(_number(path, line, name, row[columns[name]]))
    if not codes:
        raise ValueError(f"nb201 table {path}: no data rows; expected {_CSV_FORM}")
    return {
        "arch_strs": arch_strs,
        "codes": np.array(codes, dtype=np.int64),
        "accuracies": {n: np.array(v) for n, v in values.items() if n[:4] == "acc_"},
        "latencies": {n[4:]: np.array(v) for n, v in values.items() if n[:4] == "lat_"},
    }


def _number(path: Path, line: int, column: str, text: str) -> float:
    """One accuracy (percent, in [0, 100]) or latency (ms, >= 0) field."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"nb201 table {path}, line {line}: column {column!r} must be a "
                         f"number, got {text!r}") from None
    if column.startswith("acc_") and not 0.0 <= value <= 100.0:
        raise ValueError(f"nb201 table {path}, line {line}: {column} must be a test accuracy "
                         f"in percent, in [0, 100], got {value}")
    if column.startswith("lat_") and not value >= 0.0:
        raise ValueError(f"nb201 table {path}, line {line}: {column} must be a latency in ms, "
                         f">= 0, got {value}")
    return value


# -- the true front and the hypervolume gap --------------------------------------------


def _front_2d(points: np.ndarray) -> np.ndarray:
    """Rows of the Pareto front of ``(n, 2)`` points (minimisation), ascending.

    A sort finds the candidates in O(n log n) (every row no worse in latency than all
    rows of smaller error, ties kept); :func:`pareto_front` then decides exactly on the
    few candidates, so the front follows the project's one definition of dominance.
    """
    finite = np.flatnonzero(~np.isnan(points).any(axis=1))
    order = finite[np.lexsort((points[finite, 1], points[finite, 0]))]
    best_so_far = np.minimum.accumulate(points[order, 1])
    candidates = order[points[order, 1] <= best_so_far]
    return np.sort(candidates[pareto_front(points[candidates])])


def true_front(
    table: NB201Table, *, device: str, dataset: str = DEFAULT_DATASET
) -> list[Config]:
    """The configs of the exact Pareto front of (error = 1 - accuracy, latency on
    ``device``) over every cell of ``table``, sorted by latency.

    Use :meth:`NB201Table.front_rows` for the row indices.

    Raises:
        UnknownNameError: an unknown device or dataset.
    """
    rows = table.front_rows(device=device, dataset=dataset)
    rows = rows[np.argsort(table.latency_ms(rows, device=device), kind="stable")]
    return [arch_str_to_config(NB201_SPACE, table.arch_strs[r]) for r in rows]


def _found_rows(
    table: NB201Table, found: Iterable[Mapping[str, Any] | str] | np.ndarray
) -> np.ndarray:
    """Unique rows of ``found``: configs, arch strings, or a 1-d array of row indices."""
    if isinstance(found, np.ndarray) and found.ndim == 1:
        rows = found.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(table)):
            raise ValueError(f"row indices must be in 0..{len(table) - 1}, got "
                             f"{rows.min()}..{rows.max()}")
    else:
        rows = table.rows(found if isinstance(found, np.ndarray) else list(found))
    return np.unique(rows)


def hv_gap(
    found: Iterable[Mapping[str, Any] | str] | np.ndarray,
    table: NB201Table,
    *,
    device: str,
    dataset: str = DEFAULT_DATASET,
) -> float:
    """The hypervolume the found cells leave on the table, as a fraction of the true
    front's: ``(HV(true front) - HV(found)) / HV(true front)``, in [0, 1].

    Both objectives (error, latency) are normalised to the true front's range (its min
    to its max of each objective map to 0..1) and the reference point is 1.1 on each, so
    figures compare across devices and datasets. Found cells beyond the reference add
    nothing. Duplicates count once.

    Args:
        found: the evaluated cells: configs, arch strings, a ``(n, 6)`` int array of
            choice indices or a 1-d int array of table rows.
        table: the table that scores them.
        device: the latency column.
        dataset: the accuracy column.

    Raises:
        ValueError: a malformed cell or one the table lacks; an unknown device or dataset.
    """
    normalised, best = _gap_basis(table, table.device(device), table.dataset(dataset))
    rows = _found_rows(table, found)
    if rows.size == 0:
        return 1.0
    got = hypervolume(normalised[rows], np.full(2, REFERENCE))
    return float(max(0.0, (best - got) / best))


def _gap_basis(table: NB201Table, device: str, dataset: str) -> tuple[np.ndarray, float]:
    """Every cell's objectives normalised to the true front's range (clipped at the
    reference), and the true front's hypervolume; cached on the table because benchmark
    harnesses score thousands of searches against one table."""
    key = ("gap", device, dataset)
    if key not in table._cache:
        points = table.objectives(device=device, dataset=dataset)
        front = points[table.front_rows(device=device, dataset=dataset)]
        low, high = front.min(axis=0), front.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        normalised = np.minimum((points - low) / span, REFERENCE)
        best = hypervolume((front - low) / span, np.full(2, REFERENCE))
        table._cache[key] = (normalised, best)
    return table._cache[key]


def true_front_found(
    found: Iterable[Mapping[str, Any] | str] | np.ndarray,
    table: NB201Table,
    *,
    device: str,
    dataset: str = DEFAULT_DATASET,
) -> int:
    """How many cells of the true Pareto front are among ``found`` (as :func:`hv_gap`
    takes them)."""
    rows = _found_rows(table, found)
    return int(np.isin(table.front_rows(device=device, dataset=dataset), rows).sum())


# -- registry --------------------------------------------------------------------------
# The registry lives in the core (``nas._tabular``) so that the benchmark harness finds
# tables by name without importing this module; ``TABLES``, ``get_table`` and
# ``list_tables`` stay importable from here.


@TABLES.register("nb201")
def nb201_table(data: str | Path | None = None) -> NB201Table:
    """NAS-Bench-201: 15,625 cells, CIFAR-10/100 and ImageNet16-120 accuracy, 5 devices."""
    return NB201Table.default() if data is None else NB201Table.from_csv(data)


__all__ = [
    "NB201_SPACE",
    "TABLES",
    "NB201Table",
    "arch_str_to_config",
    "cell_code",
    "config_to_arch_str",
    "get_table",
    "hv_gap",
    "is_degenerate",
    "list_tables",
    "nb201_table",
    "true_front",
    "true_front_found",
]
