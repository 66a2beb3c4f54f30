"""Predictor quality on NAS-Bench-201: Spearman, Kendall tau and MAPE on held-out cells.

For each setting (target, number of training samples, feature set, log target or not)
and each model, 10 seeds draw the training cells; the remaining cells are scored and
the median over seeds is reported. Writes ``benchmarks/results/predictors_nb201.json``.

Feature sets:
- ``nb201``: one-hot per edge (30 floats);
- ``nb201+proxies``: plus live-operation counts and a degenerate flag (36 floats);
- ``transfer``: the other four devices' latencies (``--space table``), i.e. transfer
  from devices already measured to a new one.

Run: ``python benchmarks/bench_predictors.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nas.predictors import NB201Features, create_predictor, read_csv, score_all

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "supernets" / "data" / "nb201_cifar_latency.csv"
if not CSV.is_file():
    CSV = Path("/work/shared/data/nb201/nb201_cifar_latency.csv")
OUT = ROOT / "benchmarks" / "results" / "predictors_nb201.json"
DEVICES = ("lat_raspi4", "lat_pixel3", "lat_gold_6226", "lat_titanxp_1", "lat_1080ti_32")


def _features(table, name: str, target: str) -> np.ndarray:
    if name == "nb201":
        return NB201Features(proxies=False).transform(table)
    if name == "nb201+proxies":
        return NB201Features(proxies=True).transform(table)
    if name == "transfer":
        return np.stack([table.column(c) for c in DEVICES if c != target], axis=1)
    if name == "transfer+nb201":
        return np.concatenate([_features(table, "transfer", target),
                               _features(table, "nb201+proxies", target)], axis=1)
    raise ValueError(name)


def _run(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)  # one process per core already
    X, y, model, samples, seed, log = job
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    train[rng.choice(len(y), size=samples, replace=False)] = True
    start = time.perf_counter()
    pred = create_predictor(model, seed=seed, log_target=log).fit(X[train], y[train]).predict(
        X[~train])
    return {**score_all(y[~train], pred), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 seeds instead of 10")
    args = parser.parse_args()
    seeds = range(3 if args.quick else 10)
    table = read_csv(CSV)
    models = ("ridge", "svr", "gp", "xgb", "mlp", "ensemble", "auto")
    small = ("ridge", "svr", "gp", "xgb", "auto")
    settings = [
        # (target, samples, features, log_target, models)
        ("lat_raspi4", 20, "transfer", True, small),
        ("lat_raspi4", 20, "transfer", False, small),
        ("lat_raspi4", 20, "nb201", False, small),
        ("lat_raspi4", 20, "nb201+proxies", False, small),
        ("lat_raspi4", 20, "nb201+proxies", True, models),
        ("lat_raspi4", 100, "nb201+proxies", True, models),
        ("lat_raspi4", 100, "nb201", True, small),
        ("lat_raspi4", 100, "transfer", True, small),
        ("acc_cifar10", 100, "nb201+proxies", False, models),
        ("acc_cifar10", 100, "nb201", False, small),
    ]
    results = []
    with ProcessPoolExecutor() as pool:
        for target, samples, feats, log, names in settings:
            X, y = _features(table, feats, target), table.column(target)
            for model in names:
                runs = list(pool.map(_run, [(X, y, model, samples, s, log) for s in seeds]))
                row = {"target": target, "samples": samples, "features": feats,
                       "log_target": log, "model": model, "seeds": len(runs),
                       **{f"median_{k}": float(np.median([r[k] for r in runs]))
                          for k in ("spearman", "kendall_tau", "mape", "rmse", "seconds")}}
                results.append(row)
                print(json.dumps(row), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"csv": str(CSV.relative_to(ROOT)) if CSV.is_relative_to(ROOT)
                               else str(CSV), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
