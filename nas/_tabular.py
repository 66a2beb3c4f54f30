"""Tabular benchmarks: search spaces whose every config has been measured already.

A tabular benchmark (NAS-Bench-201, ...) answers a config's accuracy and latency by
lookup, and knows its *true* Pareto front, so a search algorithm can be scored by the
hypervolume it leaves on the table. The core finds them by name in :data:`TABLES`
(filled by ``nas.supernets``) and uses them only through the duck-typed
:class:`TabularBenchmark` interface, so it never imports a concrete table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nas._evaluator import BaseEvaluator
from nas._registry import Registry
from nas._space import SearchSpace


@runtime_checkable
class TabularBenchmark(Protocol):
    """What the search benchmark harness needs from a table.

    ``device``/``dataset`` arguments name a latency column and an accuracy column of
    the table; an unknown one raises :class:`~nas.UnknownNameError` listing the known
    ones. Every method taking ``dataset`` has a default (the table's usual dataset).
    """

    sha256: str
    """Hash of the table's data (names the table in results)."""
    default_dataset: str
    """The accuracy column used when none is named."""

    @property
    def space(self) -> SearchSpace: ...

    @property
    def devices(self) -> tuple[str, ...]: ...

    @property
    def datasets(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...

    def device(self, name: str) -> str:
        """``name`` checked against :attr:`devices`, in canonical form."""
        ...

    def dataset(self, name: str) -> str:
        """``name`` checked against :attr:`datasets`, in canonical form."""
        ...

    def evaluator(self, device: str, dataset: str = ..., *, missing: str = ...) -> BaseEvaluator:
        """An evaluator of metrics ``accuracy`` (fraction) and ``latency_ms`` by lookup;
        ``missing="nan"`` scores configs the table lacks as NaN instead of raising."""
        ...

    def front_rows(self, *, device: str, dataset: str = ...) -> Any:
        """Rows of the exact Pareto front of (error, latency)."""
        ...

    def hv_gap(
        self, found: Iterable[Mapping[str, Any] | str] | Any, *, device: str, dataset: str = ...
    ) -> float:
        """Hypervolume the found configs leave to the true front, a fraction in [0, 1]."""
        ...

    def true_front_found(
        self, found: Iterable[Mapping[str, Any] | str] | Any, *, device: str, dataset: str = ...
    ) -> int:
        """How many cells of the true Pareto front are among ``found``."""
        ...


TABLES: Registry[TabularBenchmark] = Registry("tabular benchmark", plugins=("nas.supernets",))
"""Tabular benchmarks: ``name -> (data: path | None) -> TabularBenchmark``."""


def get_table(name: str, data: str | Path | None = None) -> TabularBenchmark:
    """The tabular benchmark ``name``, from its shipped table or from the CSV ``data``.

    Raises:
        UnknownNameError: no benchmark of that name; the message lists the known ones.
        FileNotFoundError, ValueError: ``data`` is not a valid table of that benchmark.
    """
    return TABLES.create(name, data=data)


def list_tables() -> list[str]:
    """Names of the registered tabular benchmarks."""
    return TABLES.names()
