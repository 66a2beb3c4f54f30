"""Issue 16's acceptance: OFA's Note10 tables and accuracy predictor, 25 ms, as they are.

What: ``nas search --space ofa-mbv3 --accuracy-predictor ofa:PATH --hw ofa-lut:FOLDER
--budget 25ms`` (the main job as a library call, an SQLite study in a temporary folder)
for each seed; for each, the first evaluation whose predicted accuracy reaches OFA's
tutorial figure (0.8171 within 25 ms) and the seconds of search until it was recorded
(from the study's own trial timestamps), the best feasible subnet, the storage used. Beside
it, the same algorithm and evaluator without a study (ask, evaluate, tell), which is what
the search costs once the study's writes are constant-cost.

Why: OFA's tutorial reaches 0.8171 predicted at 24.73 ms; the issue asks for the same
within 5 s of search on 2 cores.

OFA's files are not in the repository: fetch ``han-cai/files`` and pass the folder that
holds ``acc_predictor.pth`` and ``note10/<r>_lookup_table.yaml``.

Writes ``benchmarks/results/ofa_published.json``.

Run: ``python benchmarks/bench_ofa_published.py --ofa-files /tmp/ofa-files [--algorithm
evo-budget] [--evals 5000] [--seeds 0 1 ... 9]`` (the ``--space`` defaults: about 10 s
per seed, the study's run and the run without a study together).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from _results import write_results

from nas._job import PREDICTED_ALGORITHM, SearchRequest, prepare_search, run_prepared
from nas.algorithms import get_algorithm
from nas.cli._search import PREDICTED_EVALS

TARGET_ACCURACY = 0.8171
BUDGET_MS = 25.0
RESULTS = Path(__file__).parent / "results" / "ofa_published.json"


def _request(files: Path, algorithm: str, evals: int, seed: int, storage: str) -> SearchRequest:
    return SearchRequest(
        supernet="", space="ofa-mbv3", accuracy_predictor=f"ofa:{files / 'acc_predictor.pth'}",
        hardware=f"ofa-lut:{files / 'note10'}", budget_ms=BUDGET_MS, evals=evals,
        algorithm=algorithm, seed=seed, study=f"ofa-note10-{algorithm}-{seed}", storage=storage,
    )


def with_study(files: Path, algorithm: str, evals: int, seed: int, folder: Path
               ) -> dict[str, Any]:
    database = folder / f"{algorithm}-{seed}.db"
    prepared = prepare_search(_request(files, algorithm, evals, seed, f"sqlite:///{database}"))
    started = time.perf_counter()
    run_prepared(prepared, progress=False)
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name=prepared.study.name,
                               storage=f"sqlite:///{database}").get_trials(deepcopy=False)
    trials = sorted((t for t in trials if t.values), key=lambda t: t.number)
    origin = trials[0].datetime_start
    best, first = None, None
    for trial in trials:
        metrics = trial.user_attrs.get("metrics") or {}
        accuracy = metrics.get("accuracy", trial.values[0])
        latency = metrics.get("latency_ms", trial.values[1])
        if latency <= BUDGET_MS and (best is None or accuracy > best["accuracy"]):
            best = {"evaluation": trial.number + 1, "accuracy": accuracy, "latency_ms": latency}
            if first is None and accuracy >= TARGET_ACCURACY:
                first = dict(best, seconds=(trial.datetime_complete - origin).total_seconds())
    return {"seed": seed, "evaluations": len(trials), "search_seconds": seconds,
            "best": best, "first_at_target": first, "storage_bytes": database.stat().st_size}


def without_study(files: Path, algorithm: str, evals: int, seed: int) -> dict[str, Any]:
    prepared = prepare_search(_request(files, algorithm, evals, seed,
                                       optuna.storages.InMemoryStorage()))  # type: ignore[arg-type]
    search = get_algorithm(algorithm, prepared.problem, seed=seed)
    seen: set[Any] = set()
    best, first = None, None
    started = time.perf_counter()
    while len(seen) < evals:
        configs = search.ask()
        results = [prepared.evaluator.evaluate(c) for c in configs]
        for config, metrics in zip(configs, results, strict=True):
            if config in seen:
                continue
            seen.add(config)
            if metrics["latency_ms"] <= BUDGET_MS and (
                    best is None or metrics["accuracy"] > best["accuracy"]):
                best = {"evaluation": len(seen), **metrics}
                if first is None and metrics["accuracy"] >= TARGET_ACCURACY:
                    first = dict(best, seconds=time.perf_counter() - started)
        search.tell(configs, results)
    return {"seed": seed, "evaluations": len(seen), "seconds": time.perf_counter() - started,
            "best": best, "first_at_target": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ofa-files", type=Path, required=True)
    parser.add_argument("--algorithm", default=PREDICTED_ALGORITHM)
    parser.add_argument("--evals", type=int, default=PREDICTED_EVALS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {"target_accuracy": TARGET_ACCURACY, "budget_ms": BUDGET_MS,
                              "algorithm": args.algorithm, "evals": args.evals, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            run = {"with_sqlite_study": with_study(args.ofa_files, args.algorithm, args.evals,
                                                   seed, Path(folder)),
                   "without_study": without_study(args.ofa_files, args.algorithm, args.evals,
                                                  seed)}
            print(seed, run)
            result["runs"].append(run)
    write_results(RESULTS, result, started)


if __name__ == "__main__":
    main()
