"""Search algorithms behind one ask/tell interface, found by name in ``ALGORITHMS``."""

from nas.algorithms._base import (
    ALGORITHMS,
    Algorithm,
    algorithm_options,
    canonical_algorithm,
    get_algorithm,
    list_algorithms,
    require_algorithm,
)
from nas.algorithms.agemoea import AGEMOEASearch
from nas.algorithms.ehvi import EHVISearch
from nas.algorithms.evo import BudgetEvolutionSearch, EvolutionSearch
from nas.algorithms.hybrid import HybridSearch
from nas.algorithms.linas import LINASSearch
from nas.algorithms.nsga2 import NSGA2Search
from nas.algorithms.nsga3 import NSGA3Search
from nas.algorithms.optuna_samplers import (
    OptunaGPSearch,
    OptunaNSGA2Search,
    OptunaNSGA3Search,
    OptunaSearch,
    TPESearch,
)
from nas.algorithms.random import RandomSearch
from nas.algorithms.screened import ScreenedNSGA2Search

__all__ = [
    "AGEMOEASearch",
    "ALGORITHMS",
    "Algorithm",
    "BudgetEvolutionSearch",
    "EHVISearch",
    "EvolutionSearch",
    "HybridSearch",
    "LINASSearch",
    "NSGA2Search",
    "NSGA3Search",
    "OptunaGPSearch",
    "OptunaNSGA2Search",
    "OptunaNSGA3Search",
    "OptunaSearch",
    "RandomSearch",
    "ScreenedNSGA2Search",
    "TPESearch",
    "algorithm_options",
    "canonical_algorithm",
    "require_algorithm",
    "get_algorithm",
    "list_algorithms",
]
