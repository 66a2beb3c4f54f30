"""Mixed-precision bit allocation as an integer linear program (HAWQ-V3).

HAWQ-V3 (Yao, Dong et al., ICML 2021, arXiv 2011.10680) picks one bit width per unit
by minimising the summed sensitivity ``Omega_u(b)`` (:mod:`._sensitivity`) under a
budget on model size, BOPs or latency, each a sum of per-unit costs. With a binary
``x[u, b]`` per unit and width::

    minimise    sum_ub Omega_u(b) x[u, b]
    subject to  sum_b x[u, b] = 1            (one width per unit)
                sum_ub cost_u(b) x[u, b] <= budget

This is a multiple-choice knapsack; :func:`scipy.optimize.milp` (HiGHS) solves it to
proven optimality (relative gap 0) in milliseconds for hundreds of units, where
enumerating the ``B**U`` policies is hopeless past a dozen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

__all__ = ["allocate_bits"]

_SCALE = 1e6
"""The objective's largest per-unit spread after scaling: HiGHS stops at an absolute gap
of 1e-6, so this resolves sensitivities to 1e-12 of the largest spread."""

_TIE = 1e-9
"""Sensitivity totals within this fraction of the largest per-unit spread are ties."""


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def _validate(
    sensitivity: Mapping[str, Mapping[int, float]],
    cost: Mapping[str, Mapping[int, float]],
) -> tuple[list[str], list[list[int]], list[list[float]], list[list[float]]]:
    """Units (sensitivity's order), each unit's widths (ascending), and the sensitivity
    and cost of each unit at each width, as floats."""
    if set(sensitivity) != set(cost):
        only_s = sorted(set(sensitivity) - set(cost))
        only_c = sorted(set(cost) - set(sensitivity))
        raise ValueError(
            f"sensitivity and cost must name the same units: only in sensitivity {only_s}, "
            f"only in cost {only_c}"
        )
    units = list(sensitivity)
    widths, sens, costs = [], [], []
    for u in units:
        if set(sensitivity[u]) != set(cost[u]):
            raise ValueError(
                f"unit {u!r} has widths {sorted(sensitivity[u])} in sensitivity but "
                f"{sorted(cost[u])} in cost"
            )
        if not sensitivity[u]:
            raise ValueError(f"unit {u!r} has no bit width to choose from")
        for b in sensitivity[u]:
            if isinstance(b, bool) or not isinstance(b, int | np.integer):
                raise ValueError(f"unit {u!r}: bit widths must be integers, got {b!r}")
        bs = sorted(int(b) for b in sensitivity[u])
        widths.append(bs)
        sens.append([_number(sensitivity[u][b], f"sensitivity[{u!r}][{b}]") for b in bs])
        costs.append([_number(cost[u][b], f"cost[{u!r}][{b}]") for b in bs])
    return units, widths, sens, costs


def _solve(
    sens: list[list[float]], costs: list[list[float]], widths: list[list[int]], slack: float
) -> list[int]:
    """Each unit's chosen index into its widths: the least total sensitivity with the
    (shifted) costs summing to at most ``slack``, and among ties the most total bits."""
    sizes = [len(w) for w in widths]
    n = sum(sizes)
    starts = np.cumsum([0] + sizes[:-1])
    # One width per unit, so shifting each unit's row by its minimum changes no choice;
    # it makes every coefficient >= 0 with a 0 in each row, and scaling then puts the
    # data on the solver's tolerances' scale.
    s = np.concatenate([np.subtract(r, min(r)) for r in sens])
    c = np.concatenate([np.subtract(r, min(r)) for r in costs])
    s = s * (_SCALE / s.max()) if s.max() > 0 else s
    c_scale = c.max() if c.max() > 0 else 1.0
    c = c / c_scale
    bits = np.concatenate([np.asarray(w, dtype=float) for w in widths])
    rows = np.repeat(np.arange(len(sizes)), sizes)
    one_each = LinearConstraint(
        sparse.csr_array((np.ones(n), (rows, np.arange(n))), shape=(len(sizes), n)), 1, 1
    )
    within = LinearConstraint(c[None, :], -np.inf, slack / c_scale)
    options = {"mip_rel_gap": 0.0}
    integrality = np.ones(n)

    def run(objective: np.ndarray, constraints: list[LinearConstraint]) -> np.ndarray:
        res = milp(objective, constraints=constraints, integrality=integrality,
                   bounds=Bounds(0, 1), options=options)
        if res.x is None:
            raise RuntimeError(f"the bit-allocation integer program failed: {res.message}")
        # Integrality holds to a tolerance: the largest entry of each unit's block wins.
        x = np.zeros(n)
        x[[start + int(np.argmax(res.x[start:start + k])) for start, k in zip(starts, sizes)]] = 1
        return x

    best = run(s, [one_each, within])
    # Tie-break: the most bits among policies as sensitive as the best (within _TIE).
    tied = LinearConstraint(s[None, :], -np.inf, float(s @ best) + _TIE * _SCALE)
    x = run(-bits, [one_each, within, tied])
    if s @ x > s @ best + _TIE * _SCALE:  # the solver's tolerance let a worse one in
        x = best
    return [int(np.argmax(x[start:start + k])) for start, k in zip(starts, sizes)]


def allocate_bits(
    sensitivity: Mapping[str, Mapping[int, float]],
    cost: Mapping[str, Mapping[int, float]],
    budget: float,
) -> dict[str, int]:
    """The bit width per unit minimising the total sensitivity within ``budget`` (HAWQ-V3).

    Args:
        sensitivity: unit -> {bits: loss proxy}, e.g. from
            :func:`~nas.quant._sensitivity.sensitivity`; lower is better.
        cost: unit -> {bits: cost} over the same units and, per unit, the same widths
            (bytes from :func:`~nas.quant._quantizers.quantized_bytes`, BOPs,
            milliseconds: any cost that adds up over units).
        budget: the most the chosen widths' costs may sum to (inclusive).

    Returns:
        unit -> bits, in ``sensitivity``'s order; ``{}`` for no units. Policies whose
        total sensitivities agree to 1e-9 of the largest per-unit spread are ties, and
        the one with the most total bits wins (a unit the loss does not feel gets the
        widest width the budget leaves room for).

    Raises:
        ValueError: the units or a unit's widths differ between the two mappings, a
            unit has no width, a width is not an integer, a value or the budget is not
            a finite number, or the budget is below the cheapest policy's cost.
    """
    units, widths, sens, costs = _validate(sensitivity, cost)
    budget = _number(budget, "budget")
    cheapest = sum(min(r) for r in costs)
    if budget < cheapest:
        raise ValueError(
            f"budget {budget} is below the smallest achievable cost {cheapest} "
            "(every unit at its cheapest width)"
        )
    if not units:
        return {}
    slack = budget - cheapest
    for _ in range(8):
        picks = _solve(sens, costs, widths, slack)
        spent = sum(r[k] for r, k in zip(costs, picks))
        if spent <= budget:
            return {u: w[k] for u, w, k in zip(units, widths, picks)}
        # Over by the solver's feasibility tolerance: ask again with less room.
        slack = max(slack - 2 * (spent - budget), 0.0)
    raise RuntimeError(f"no policy within budget {budget} found; the cheapest costs {cheapest}")
