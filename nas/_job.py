"""The main job as a library call: resolve names, check the budget, open the study, run.

The CLI's ``nas search`` is a thin shell around :func:`prepare_search` and
:func:`run_prepared`; notebooks and scripts can call them directly.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nas._evaluator import Evaluator
from nas._hardware import HardwareTarget, get_hardware
from nas._problem import Problem, accuracy_latency_problem
from nas._search import SearchResult, run_search
from nas._supernet import Supernet, get_supernet
from nas._task import Task, get_task
from nas.algorithms import canonical_algorithm, get_algorithm
from nas.studies import Study, StudyMeta, default_storage, open_study, stored_meta

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
    seed: int | None = None
    algorithm: str | None = None
    study: str | None = None
    storage: str | None = None
    eval_limit: int | None = None
    change_budget: bool = False
    """Continue an existing study under ``budget_ms`` although it has another budget."""


@dataclass
class PreparedSearch:
    """A search whose inputs are resolved and checked, ready to run: ``request`` with
    its seed and algorithm filled in (the study's own where it exists, else 0 and the
    default algorithm's name)."""

    request: SearchRequest
    supernet: Supernet
    task: Task
    target: HardwareTarget
    problem: Problem
    study: Study
    storage: str
    min_latency_ms: float
    max_latency_ms: float
    """The largest subnet's latency: a budget at or above it constrains nothing."""


def prepare_search(request: SearchRequest) -> PreparedSearch:
    """Load and check everything before any long work.

    Raises:
        UnknownNameError: unknown supernet, target or algorithm.
        InfeasibleBudgetError: even the smallest subnet exceeds the budget.
        StudyMismatchError: the study belongs to another supernet or target, or was
            created with another seed, algorithm or budget (see :func:`open_study`).
    """
    name = request.study or f"{request.supernet}-{request.hardware}"
    storage = request.storage or default_storage()
    request = _with_study_settings(request, stored_meta(name, storage))
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
    max_latency = target.latency_ms(supernet, supernet.space.largest(), task)
    problem = accuracy_latency_problem(supernet.space, budget_ms=request.budget_ms)
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
    study = open_study(name, storage, meta=meta, space=supernet.space,
                       change_budget=request.change_budget)
    return PreparedSearch(request, supernet, task, target, problem, study, storage, min_latency,
                          max_latency)


def _with_study_settings(request: SearchRequest, stored: StudyMeta | None) -> SearchRequest:
    """Fill the seed and algorithm left out: the study's own when it exists (so a rerun
    resumes it), else 0 and the default. Algorithms are stored by their own name
    (``default`` is stored as what it stands for), so a later change of the default
    never changes what a resumed study runs."""
    algorithm = request.algorithm
    if algorithm is None:
        algorithm = stored.algorithm if stored is not None and stored.algorithm else "default"
    seed = request.seed
    if seed is None:
        seed = stored.seed if stored is not None and stored.seed is not None else 0
    return dataclasses.replace(request, seed=seed, algorithm=canonical_algorithm(algorithm))


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
