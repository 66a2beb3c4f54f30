"""The ask/tell contract every search algorithm implements, and their registry."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from nas._extras import require
from nas._problem import Problem
from nas._registry import Registry
from nas._space import Config


class Algorithm(abc.ABC):
    """A search algorithm driven from outside: ``ask`` for configs, ``tell`` their results.

    Contract:

    * ``ask()`` returns a batch of canonical configs of ``problem.space`` (possibly
      empty when the algorithm has nothing new to propose; duplicates allowed).
    * ``tell(configs, results)`` must follow each ``ask`` with the same configs and one
      metrics dict per config (the metrics the problem reads), before the next ``ask``.
    * Deterministic: the sequence of asks depends only on ``seed`` and on the told
      results. The search relies on this to resume a killed run by replaying it, with
      the configs already in the study served from the study.

    Subclasses implement ``_ask`` and ``_tell``; ``__init__`` stores arguments only (state
    is built lazily on the first ask). Not thread safe.

    Args:
        problem: objectives, budgets and the search space.
        seed: seeds the algorithm's own random generator (never a global one).
        **options: algorithm-specific options, recorded in :attr:`options`.
    """

    name: str = ""
    extra: str | None = None
    """The extra (``pyproject.toml``) the algorithm needs, if any."""

    def __init__(self, problem: Problem, *, seed: int, **options: Any) -> None:
        if not isinstance(problem, Problem):
            raise TypeError(f"problem must be a nas Problem, got {type(problem).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.problem = problem
        self.seed = seed
        self.options = dict(options)
        self._pending: list[Config] | None = None

    def ask(self) -> list[Config]:
        """The next batch of configs to evaluate.

        Raises:
            RuntimeError: the previous batch has not been told yet.
        """
        if self._pending is not None:
            raise RuntimeError(f"{type(self).__name__}.ask: tell the previous batch first")
        batch = list(self._ask())
        self._pending = batch
        return list(batch)

    def tell(self, configs: Sequence[Config], results: Sequence[Mapping[str, float]]) -> None:
        """Report the metrics of the configs of the last :meth:`ask`.

        Raises:
            ValueError: ``configs`` differ from the last batch asked, or the lengths differ.
            RuntimeError: nothing was asked.
        """
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__}.tell: nothing was asked")
        if len(configs) != len(results):
            raise ValueError(
                f"tell needs one result per config, got {len(configs)} configs and "
                f"{len(results)} results"
            )
        if list(configs) != self._pending:
            raise ValueError("tell must report the configs of the last ask, in order")
        self._pending = None
        self._tell(list(configs), [dict(r) for r in results])

    @abc.abstractmethod
    def _ask(self) -> Sequence[Config]: ...

    @abc.abstractmethod
    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None: ...


ALGORITHMS: Registry[Algorithm] = Registry("algorithm", plugins=("nas.algorithms",))
"""Search algorithms: ``name -> (problem, *, seed, **options) -> Algorithm``."""


def get_algorithm(name: str, problem: Problem, *, seed: int, **options: Any) -> Algorithm:
    """The algorithm ``name`` (``"random"``, ``"nsga2"``, ``"default"``) for ``problem``.

    Raises:
        UnknownNameError: no algorithm of that name (the message lists the known ones).
        ValueError: an option the algorithm does not take, or a bad option value.
    """
    factory = ALGORITHMS.entry(name).factory
    allowed = algorithm_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown and not _takes_any_keyword(factory):
        raise ValueError(
            f"algorithm {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return factory(problem=problem, seed=seed, **options)


def canonical_algorithm(name: str) -> str:
    """The name an algorithm is registered under by its own class (``default`` and
    aliases such as ``optuna-tpe`` resolve to ``screened``, ``tpe``); what studies record.

    Raises:
        UnknownNameError: no algorithm of that name.
    """
    own = getattr(ALGORITHMS.entry(name).factory, "name", "")
    return own if own and own in ALGORITHMS else name


def require_algorithm(name: str) -> None:
    """Check, before any study is opened, that algorithm ``name``'s extra is installed.

    Raises:
        MissingExtraError: it is not (the message names the extra).
    """
    extra = getattr(ALGORITHMS.entry(name).factory, "extra", None)
    if extra is not None:
        require(extra, purpose=f"the {name!r} algorithm")


def algorithm_options(name: str) -> list[str]:
    """The keyword options algorithm ``name`` takes besides ``problem`` and ``seed``."""
    factory = ALGORITHMS.entry(name).factory
    return [
        p.name for p in inspect.signature(factory).parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name != "seed"
    ]


def check_int(option: str, value: Any, *, least: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{option} must be an integer >= {least}, got {value!r}")


def _takes_any_keyword(factory: Any) -> bool:
    return any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
    )


def list_algorithms() -> list[str]:
    return ALGORITHMS.names()
