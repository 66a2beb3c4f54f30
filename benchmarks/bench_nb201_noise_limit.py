"""How much of ehvi's NAS-Bench-201 gap is its predictors', how much the table's noise.

``ehvi`` runs side by side with the same search but other models behind it:

- ``learned``: the default (a GP per metric, fitted on what was measured);
- ``oracle-accuracy`` / ``oracle-latency`` / ``oracle-both``: the true table value of
  that metric for every candidate, with no uncertainty;
- ``structure``: for every cell, what the *other* 15,624 cells say about it (5-fold
  out-of-fold XGBoost over the whole table), with the out-of-fold residual spread as its
  uncertainty. No predictor fitted on a few hundred cells can know more than this; what
  it cannot know is each cell's own noise (training seed, timing), which decides which
  of many near-equivalent cells lands on the true front.

It also counts the cells within a small normalised error of the true front (the
"lottery" the search must draw from). Writes
``benchmarks/results/nb201_noise_limit-<device>.json``.

Run: ``python benchmarks/bench_nb201_noise_limit.py [--device raspi4] [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nas._bench import bench_search
from nas._pareto import pareto_front
from nas._space import space_features
from nas._tabular import get_table
from nas.algorithms import ALGORITHMS, EHVISearch
from nas.algorithms._surrogate import MetricModels, enumerate_space
from nas.predictors import create_predictor

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NEAR = (0.002, 0.005, 0.01)  # normalised error margins counted around the true front


class TableModel:
    """A "predictor" that knows every cell: a per-cell mean and std on the modelled scale."""

    has_std = True

    def __init__(self, features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        self._row = {bytes(f): i for i, f in enumerate(features)}
        self.mean, self.std = mean, std

    def predict(self, X: np.ndarray, return_std: bool = False):
        rows = np.array([self._row[bytes(x)] for x in np.asarray(X, dtype=float)])
        return (self.mean[rows], self.std[rows]) if return_std else self.mean[rows]


def table_models(device: str) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Per metric: the true values, and the structure model's (mean, std) per cell, both
    on :class:`~nas.algorithms._surrogate.MetricTransform`'s scale (error and log)."""
    table = get_table("nb201")
    cells = enumerate_space(table.space, 20_000)
    assert cells is not None
    X = space_features(table.space, cells)
    rows = table.rows(cells)
    truth = {"accuracy": np.log(1.0 - table.accuracy(rows, dataset=table.default_dataset)),
             "latency_ms": np.log(table.latency_ms(rows, device=device))}
    structure = {}
    folds = np.random.default_rng(0).permutation(len(cells)) % 5
    for metric, y in truth.items():
        mean = np.empty_like(y)
        for k in range(5):
            fit = folds != k
            mean[~fit] = create_predictor("xgb", seed=0).fit(X[fit], y[fit]).predict(X[~fit])
        std = np.full_like(y, np.sqrt(np.mean((y - mean) ** 2)))
        structure[metric] = (mean, std)
    return {"X": X, **truth}, structure


def register_variants(device: str) -> list[str]:
    """Register ``ehvi`` with each swapped-in model under its own name; return the names."""
    data, structure = table_models(device)
    X = data["X"]
    exact = {m: TableModel(X, data[m], np.full(len(X), 1e-6))
             for m in ("accuracy", "latency_ms")}
    smooth = {m: TableModel(X, *structure[m]) for m in structure}
    variants = {
        "oracle-accuracy": {"accuracy": exact["accuracy"]},
        "oracle-latency": {"latency_ms": exact["latency_ms"]},
        "oracle-both": exact,
        "structure": smooth,
    }
    names = []
    for label, swap in variants.items():
        name = f"ehvi+{label}"
        if name not in ALGORITHMS:
            ALGORITHMS.register(name, description=f"ehvi with {label} models")(
                _with_models(name, swap))
        names.append(name)
    return names


def _with_models(name: str, swap: dict[str, TableModel]) -> type[EHVISearch]:
    class Swapped(EHVISearch):
        def _fit_models(self) -> MetricModels:
            learned = super()._fit_models()
            models = {**learned.models, **swap}
            return MetricModels(learned.problem, models, learned.transforms)

    Swapped.name = name
    return Swapped


def near_front_counts(device: str) -> dict[str, int]:
    """Cells whose normalised error is within each margin of the true front's at their
    latency (as :func:`nas.supernets.nb201.hv_gap` normalises)."""
    table = get_table("nb201")
    points = table.objectives(device=device)
    front = points[table.front_rows(device=device)]
    low, span = front.min(axis=0), np.ptp(front, axis=0)
    norm, front = (points - low) / span, (front - low) / span
    front = front[pareto_front(front)]
    order = np.argsort(front[:, 1])
    lat, best_err = front[order, 1], np.minimum.accumulate(front[order, 0])
    at = np.searchsorted(lat, norm[:, 1], side="right") - 1
    excess = np.where(at >= 0, norm[:, 0] - best_err[np.maximum(at, 0)], np.inf)
    return {f"within_{m}": int((excess <= m).sum()) for m in NEAR}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="raspi4")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=250)
    args = parser.parse_args()
    start = time.perf_counter()
    names = ["ehvi", *register_variants(args.device)]
    bench = bench_search("nb201", device=args.device, algorithms=names, evals=args.evals,
                         seeds=args.seeds, progress=True)
    document = {
        "device": args.device,
        "seeds": args.seeds,
        "evals": args.evals,
        "hv_gap_median": {s.algorithm: s.hv_gap_median for s in bench.summary
                          if s.evals == args.evals},
        "true_front_found_median": {s.algorithm: s.true_front_found_median
                                    for s in bench.summary if s.evals == args.evals},
        "true_front_size": bench.true_front_size,
        "cells_near_true_front": near_front_counts(args.device),
        "seconds": time.perf_counter() - start,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"nb201_noise_limit-{args.device}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    for name, gap in document["hv_gap_median"].items():
        print(f"{name:24s} gap at {args.evals}: {100 * gap:.3f}%")
    print(json.dumps(document["cells_near_true_front"]), "->", path)


if __name__ == "__main__":
    main()
