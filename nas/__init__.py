"""Hardware-aware neural architecture search and model compression.

The core types live here; families, targets, predictors, compression methods and
studies live in the subpackages ``nas.supernets``, ``nas.hardware``, ``nas.predictors``,
``nas.compress`` and ``nas.studies``.
"""

from __future__ import annotations

from typing import Any

from nas._evaluator import BaseEvaluator, Evaluator, FunctionEvaluator, PredictedEvaluator
from nas._hardware import (
    HARDWARE,
    MEMORY_MODELS,
    HardwareTarget,
    MemoryEstimate,
    MemoryModel,
    Provenance,
    get_hardware,
    list_hardware,
)
from nas._problem import Constraint, Objective, Problem, accuracy_latency_problem
from nas._registry import Registry, UnknownNameError
from nas._space import Condition, Config, Gene, SearchSpace
from nas._supernet import (
    SPACES,
    SUBNET_BUILDERS,
    SUPERNET_FAMILIES,
    SUPERNETS,
    LayerShape,
    SpaceModel,
    SubnetShape,
    Supernet,
    get_space,
    get_supernet,
    list_supernets,
)
from nas._tabular import TABLES, get_table, list_tables
from nas._task import TASKS, Task, Workload, get_task
from nas._units import parse_latency_ms

__all__ = [
    "HARDWARE",
    "MEMORY_MODELS",
    "MemoryEstimate",
    "MemoryModel",
    "BaseEvaluator",
    "Constraint",
    "Evaluator",
    "FunctionEvaluator",
    "Objective",
    "PredictedEvaluator",
    "Problem",
    "SearchResult",
    "accuracy_latency_problem",
    "run_search",
    "SPACES",
    "SUBNET_BUILDERS",
    "SUPERNET_FAMILIES",
    "SUPERNETS",
    "TABLES",
    "TASKS",
    "Condition",
    "Config",
    "Gene",
    "HardwareTarget",
    "LayerShape",
    "Provenance",
    "Registry",
    "SearchSpace",
    "SpaceModel",
    "SubnetShape",
    "Supernet",
    "Task",
    "UnknownNameError",
    "Workload",
    "get_hardware",
    "get_space",
    "get_supernet",
    "get_table",
    "get_task",
    "list_hardware",
    "list_supernets",
    "list_tables",
    "load_subnet",
    "parse_latency_ms",
    "save_subnet",
]


def __getattr__(name: str) -> Any:
    # Export lives with the supernet families (it needs their dense builders) and the
    # search loop pulls in Optuna: import both lazily so that ``import nas`` stays light
    # and free of cycles.
    if name in ("load_subnet", "save_subnet"):
        from nas.supernets import _export

        return getattr(_export, name)
    if name in ("run_search", "SearchResult"):
        from nas import _search

        return getattr(_search, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
