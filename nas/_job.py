"""The main job as a library call: resolve names, check the budget, open the study, run.

The CLI's ``nas search`` is a thin shell around :func:`prepare_search` and
:func:`run_prepared`; notebooks and scripts can call them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nas._evaluator import Evaluator
from nas._hardware import HardwareTarget, get_hardware
from nas._problem import Problem, accuracy_latency_problem
from nas._search import SearchResult, run_search
from nas._supernet import Supernet, get_supernet
from nas._task import Task, get_task
from nas.algorithms import ALGORITHMS, get_algorithm
from nas.studies import Study, StudyMeta, default_storage, open_study

logger = logging.getLogger(__name__)


class InfeasibleBudgetError(ValueError):
    """No subnet of the space can meet the budget on the target."""


@dataclass(frozen=True)
class SearchRequest:
    """Everything ``nas search`` is asked for."""

    supernet: str
    hardware: str
    budget_ms: float
    evals: int
    seed: int = 0
    algorithm: str = "default"
    study: str | None = None
    storage: str | None = None
    eval_limit: int | None = None


@dataclass
class PreparedSearch:
    """A search whose inputs are resolved and checked, ready to run."""

    request: SearchRequest
    supernet: Supernet
    task: Task
    target: HardwareTarget
    problem: Problem
    study: Study
    storage: str
    min_latency_ms: float


def prepare_search(request: SearchRequest) -> PreparedSearch:
    """Load and check everything before any long work.

    Raises:
        UnknownNameError: unknown supernet, target or algorithm.
        InfeasibleBudgetError: even the smallest subnet exceeds the budget.
        StudyMismatchError: the study belongs to another supernet or target.
    """
    ALGORITHMS.entry(request.algorithm)
    target = get_hardware(request.hardware)
    supernet = get_supernet(request.supernet)
    if supernet.task_name is None:
        raise ValueError(f"supernet {request.supernet!r} records no task to validate it on")
    task = get_task(supernet.task_name)
    smallest = supernet.space.smallest()
    min_latency = target.latency_ms(supernet, smallest, task)
    if min_latency > request.budget_ms:
        raise InfeasibleBudgetError(
            f"budget {request.budget_ms:g} ms is infeasible on {request.hardware}: the smallest "
            f"subnet of {request.supernet} takes {min_latency:.1f} ms"
        )
    problem = accuracy_latency_problem(supernet.space, budget_ms=request.budget_ms)
    storage = request.storage or default_storage()
    meta = StudyMeta.for_problem(
        problem,
        supernet=request.supernet,
        checkpoint_hash=supernet.checkpoint_hash,
        hardware=target.name,
        hardware_fingerprint=target.fingerprint,
        seed=request.seed,
        algorithm=request.algorithm,
        task=task.name,
        eval_limit=request.eval_limit,
    )
    name = request.study or f"{request.supernet}-{request.hardware}"
    study = open_study(name, storage, meta=meta, space=supernet.space)
    return PreparedSearch(request, supernet, task, target, problem, study, storage, min_latency)


def run_prepared(prepared: PreparedSearch, *, progress: bool = True) -> SearchResult:
    request = prepared.request
    algorithm = get_algorithm(request.algorithm, prepared.problem, seed=request.seed)
    evaluator = Evaluator(
        prepared.supernet, prepared.task, prepared.target, eval_limit=request.eval_limit
    )
    return run_search(
        prepared.problem, algorithm, evaluator, prepared.study,
        n_evals=request.evals, progress=progress,
    )
