"""Search algorithms behind one ask/tell interface, found by name in ``ALGORITHMS``."""

from nas.algorithms._base import (
    ALGORITHMS,
    Algorithm,
    algorithm_options,
    get_algorithm,
    list_algorithms,
)
from nas.algorithms.nsga2 import NSGA2Search
from nas.algorithms.random import RandomSearch

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "NSGA2Search",
    "RandomSearch",
    "algorithm_options",
    "get_algorithm",
    "list_algorithms",
]
