"""A study summarised as one JSON-able document (for ``nas studies show`` and dashboards)."""

from __future__ import annotations

from typing import Any

from nas._pareto import hypervolume_defined
from nas._problem import Problem
from nas._space import SearchSpace
from nas._supernet import Supernet, get_supernet
from nas.studies._pareto import front_of, search_hypervolume
from nas.studies._study import Study, StudyMismatchError, load_study


def study_problem(study: Study) -> Problem:
    """The study's problem (objectives, current budgets); works without a stored space."""
    space = study.space or SearchSpace(study.meta.space, ())
    return Problem(space, study.meta.objective_list(), study.meta.constraint_list())


def study_supernet(study: Study, supernet: Supernet | None = None) -> Supernet:
    """The supernet the study's search ran on: ``supernet`` or the registered one of the
    study's name, refused unless its weights are the study's (the stored accuracies
    would describe other weights).

    Raises:
        StudyMismatchError: the supernet's checkpoint hash is not the study's.
    """
    if supernet is None:
        supernet = get_supernet(study.meta.supernet)
    if supernet.checkpoint_hash != study.meta.checkpoint_hash:
        raise StudyMismatchError(
            f"study {study.name!r} was run on checkpoint {study.meta.checkpoint_hash[:12]} of "
            f"supernet {study.meta.supernet!r}, but the supernet at hand has checkpoint "
            f"{supernet.checkpoint_hash[:12]}"
        )
    return supernet


def describe_study(study: str | Study, storage: str | None = None) -> dict[str, Any]:
    """Settings, counts, Pareto front and hypervolume of a study.

    Pareto rows are flat, one per subnet, sorted by latency (the first minimised
    objective): ``{"trial": 3, "accuracy": 0.81, "latency_ms": 41.2, ..., "config": {...}}``
    with every stored metric. ``hypervolume`` is in the normalised space of
    :func:`~nas.studies.search_hypervolume` (None when not defined for the objectives).

    Args:
        study: a study name (then ``storage`` is needed) or an open study.
        storage: the storage URL.

    Raises:
        StudyNotFoundError: no such study.
    """
    if not isinstance(study, Study):
        if storage is None:
            raise ValueError("describe_study needs storage= with a study name")
        study = load_study(study, storage)
    trials = study.trials()
    problem = study_problem(study)
    pareto = [
        {"trial": t.number, **t.metrics, "config": dict(t.config)}
        for t in front_of(trials, problem)
    ]
    return {
        "name": study.name,
        "storage": study.storage,
        "meta": study.meta.to_dict(),
        "budget_changes": study.budget_changes(),
        "trials": len(trials),
        "feasible": sum(1 for t in trials if t.feasible),
        "failed": sum(1 for t in trials if t.failed),
        "pareto": pareto,
        "hypervolume": (
            search_hypervolume(trials, problem) if hypervolume_defined(problem) else None
        ),
    }
