"""Few-shot latency on a new device: K measured NAS-Bench-201 cells, every other cell predicted.

Each of the table's five devices plays the new device in turn; the other four are the
references. For K in 5, 10, 20, 50 and seeds 0..9, K cells are drawn, and three models
predict the other 15,625 - K cells:

- ``fewshot``: :class:`nas.hardware._fewshot.FewShotLatency` on the four references
  (the platform's adaptation);
- ``best-reference``: the single reference most correlated with the K cells, mapped by
  a power law fitted on them (the simplest transfer);
- ``encoding``: ridge on the cell's own features (one-hot edges and live operation
  counts) and log latency, i.e. no transfer at all.

Scores are Spearman, Kendall tau and MAPE on the cells not drawn, medians over seeds.
The issue's reference point: Spearman 0.89 with 20 samples on the Raspberry Pi 4 (the
best published few-shot figure). Writes ``benchmarks/results/fewshot_latency_nb201.json``.

Run: ``python benchmarks/bench_fewshot_latency.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nas._space import space_features
from nas._tabular import get_table
from nas.hardware._fewshot import FewShotLatency
from nas.predictors import create_predictor, score_all
from nas.supernets.nb201 import arch_str_to_config

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "fewshot_latency_nb201.json"
SHOTS = (5, 10, 20, 50)
SEEDS = range(10)


def best_reference(reference_ms: np.ndarray, train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Predictions of the one reference whose log latency correlates best with the
    drawn cells', mapped by a power law fitted on them."""
    logs = np.log(reference_ms)
    corr = [abs(np.corrcoef(logs[train, j], np.log(y[train]))[0, 1])
            for j in range(logs.shape[1])]
    j = int(np.nanargmax(corr))
    slope, intercept = np.polyfit(logs[train, j], np.log(y[train]), 1)
    return np.exp(intercept + slope * logs[:, j])


def predictions(model: str, reference_ms: np.ndarray, features: np.ndarray, y: np.ndarray,
                train: np.ndarray, seed: int) -> np.ndarray:
    """Every cell's predicted latency on the new device from the ``train`` cells."""
    if model == "fewshot":
        return FewShotLatency().fit(reference_ms[train], y[train]).predict(reference_ms)
    if model == "best-reference":
        return best_reference(reference_ms, train, y)
    encoding = create_predictor("ridge", seed=seed, log_target=True)
    return encoding.fit(features[train], y[train]).predict(features)


def run() -> dict:
    table = get_table("nb201")
    rows = np.arange(len(table))
    configs = [arch_str_to_config(table.space, s) for s in table.arch_strs]
    features = space_features(table.space, configs)
    latency = {d: table.latency_ms(rows, device=d) for d in table.devices}
    results = []
    for device in table.devices:
        y = latency[device]
        reference_ms = np.column_stack([latency[d] for d in table.devices if d != device])
        for shots in SHOTS:
            scores: dict[str, list[dict]] = {m: [] for m in ("fewshot", "best-reference",
                                                              "encoding")}
            for seed in SEEDS:
                train = np.random.default_rng([seed, shots]).choice(len(y), shots,
                                                                    replace=False)
                test = np.setdiff1d(rows, train)
                for model, runs in scores.items():
                    pred = predictions(model, reference_ms, features, y, train, seed)
                    runs.append(score_all(y[test], pred[test]))
            for model, runs in scores.items():
                results.append({
                    "device": device, "shots": shots, "model": model,
                    **{f"median_{k}": float(np.median([r[k] for r in runs]))
                       for k in ("spearman", "kendall_tau", "mape")},
                })
    return {"table": "nb201", "table_sha256": table.sha256, "seeds": len(SEEDS),
            "references": "the table's other four devices", "results": results}


def main() -> None:
    document = run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"{'device':10} {'K':>3} " + " ".join(f"{m:>16}" for m in
                                                 ("fewshot", "best-reference", "encoding")))
    by_key = {(r["device"], r["shots"], r["model"]): r for r in document["results"]}
    for device in dict.fromkeys(r["device"] for r in document["results"]):
        for shots in SHOTS:
            print(f"{device:10} {shots:>3} " + " ".join(
                f"{by_key[(device, shots, m)]['median_spearman']:>16.3f}"
                for m in ("fewshot", "best-reference", "encoding")))
    print(f"Spearman, median of {document['seeds']} seeds -> {OUT}")


if __name__ == "__main__":
    main()
