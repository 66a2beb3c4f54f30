"""Hardware-aware neural architecture search and model compression.

The core types live here; families, targets, predictors, compression methods and
studies live in the subpackages ``nas.supernets``, ``nas.hardware``, ``nas.predictors``,
``nas.compress`` and ``nas.studies``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Every name is imported on first use (PEP 562), so that ``import nas`` (and so the CLI's
# ``--help``) does not pay for torch, Optuna and pymoo. The TYPE_CHECKING imports are
# there for type checkers and the API reference; _WHERE says where each name lives.
if TYPE_CHECKING:
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
    from nas._search import SearchResult, run_search
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
    from nas.supernets._export import load_subnet, save_subnet

_WHERE = {
    "nas._evaluator": ("BaseEvaluator", "Evaluator", "FunctionEvaluator", "PredictedEvaluator"),
    "nas._hardware": ("HARDWARE", "MEMORY_MODELS", "HardwareTarget", "MemoryEstimate",
                      "MemoryModel", "Provenance", "get_hardware", "list_hardware"),
    "nas._problem": ("Constraint", "Objective", "Problem", "accuracy_latency_problem"),
    "nas._registry": ("Registry", "UnknownNameError"),
    "nas._search": ("SearchResult", "run_search"),
    "nas._space": ("Condition", "Config", "Gene", "SearchSpace"),
    "nas._supernet": ("SPACES", "SUBNET_BUILDERS", "SUPERNET_FAMILIES", "SUPERNETS",
                      "LayerShape", "SpaceModel", "SubnetShape", "Supernet", "get_space",
                      "get_supernet", "list_supernets"),
    "nas._tabular": ("TABLES", "get_table", "list_tables"),
    "nas._task": ("TASKS", "Task", "Workload", "get_task"),
    "nas._units": ("parse_latency_ms",),
    # export lives with the supernet families: it needs their dense builders
    "nas.supernets._export": ("load_subnet", "save_subnet"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

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
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module 'nas' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
