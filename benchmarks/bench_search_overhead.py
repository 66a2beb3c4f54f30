"""The search loop's own cost per evaluation, and how it grows with the study.

A trivial evaluator (a formula over OFA MobileNetV3 configs, microseconds per call)
leaves only the loop: the algorithm's ask/tell, cache lookups, the Pareto archive, the
progress callback and the study's storage writes. Each algorithm runs in memory and on
a new SQLite file, at N and 10 N evaluations; the figures per run are evaluations per
second in the first and the last tenth (a cost per evaluation that grows with the
study shows as a last tenth slower than the first), the loop's own overhead per
evaluation (wall time less the algorithm's and the evaluator's), and the commits.

Baselines in the same run: Optuna's own ``study.optimize`` with its random sampler on
the same function in memory (what a user would write without the platform; on SQLite it
writes each parameter in its own queries, about 0.5 s a trial here, too slow to run at
scale), Optuna's ``study.add_trial`` per evaluation on SQLite (how the platform wrote
before batched writes), and the platform committing every evaluation on its own
(``commit_seconds=0``).

    python benchmarks/bench_search_overhead.py            # writes
    python benchmarks/bench_search_overhead.py --quick    # a smoke run, not written
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

from nas import Constraint, FunctionEvaluator, Objective, Problem  # noqa: E402
from nas._search import run_search  # noqa: E402
from nas.algorithms import get_algorithm  # noqa: E402
from nas.studies import StudyMeta, open_study  # noqa: E402
from nas.supernets.ofa._space import MOBILENETV3_SPACE  # noqa: E402

OUT = Path(__file__).parent / "results" / "search_overhead.json"
SPACE = MOBILENETV3_SPACE.build()
BUDGET_MS = 25.0
# The default (screened) refits Gaussian processes on the latest 250 evaluations every
# generation (it is made for expensive evaluations): a smaller scale, and its cost per
# evaluation grows until its models' training set is full.
SCALES = {"random": (5_000, 50_000), "nsga2": (5_000, 50_000), "evo": (5_000, 50_000),
          "default": (200, 1_000)}
CHEAP = ("random", "nsga2", "evo")  # held to the targets: 10 s / 30 s, last tenth 1.2x


def metrics(config) -> dict[str, float]:
    """A smooth accuracy/latency trade-off with a little config-specific noise."""
    values = config.to_dict()
    work = sum(v for k, v in values.items() if k.endswith(("kernel", "expand")))
    scale = (values["resolution"] / 224) ** 2
    jitter = int(config.key[:4], 16) / 65536 - 0.5
    return {"accuracy": 0.80 - 8.0 / (work * scale + 40) + 0.004 * jitter,
            "latency_ms": 0.12 * work * scale + 2.0}


PROBLEM = Problem(SPACE, [Objective("accuracy", "maximize"), Objective("latency_ms", "minimize")],
                  [Constraint("latency_ms", upper=BUDGET_MS)])


def storage_url(kind: str, folder: Path, name: str) -> str | optuna.storages.BaseStorage:
    return optuna.storages.InMemoryStorage() if kind == "memory" else \
        f"sqlite:///{folder / (name + '.db')}"


def tenth_rates(stamps: list[float]) -> tuple[float, float]:
    """Evaluations per second in the first and the last tenth of a run."""
    k = max(len(stamps) // 10, 1)
    first = k / stamps[k - 1]
    last = k / (stamps[-1] - stamps[-k - 1])
    return first, last


def run_platform(algorithm: str, storage: str, n: int, folder: Path, *,
                 commit_seconds: float = 1.0) -> dict:
    name = f"{algorithm}-{storage}-{n}-{commit_seconds}"
    meta = StudyMeta.for_problem(PROBLEM, supernet="none", checkpoint_hash="formula",
                                 hardware="formula", hardware_fingerprint="formula", seed=0,
                                 algorithm=algorithm)
    study = open_study(name, storage_url(storage, folder, name), meta=meta, space=SPACE)
    stamps: list[float] = []
    start = time.perf_counter()
    result = run_search(PROBLEM, get_algorithm(algorithm, PROBLEM, seed=0),
                        FunctionEvaluator(SPACE, metrics, fingerprint="formula"), study,
                        n_evals=n, commit_seconds=commit_seconds,
                        progress=lambda _: stamps.append(time.perf_counter() - start))
    first, last = tenth_rates(stamps)
    row = {"runner": "nas", "algorithm": algorithm, "storage": storage, "evals": n,
           "commit_seconds": commit_seconds, "seconds": round(result.seconds, 3),
           "evals_per_s_first_tenth": round(first), "evals_per_s_last_tenth": round(last),
           "last_over_first_cost": round(first / last, 3),
           "loop_overhead_us": round(result.overhead_us, 1),
           "algorithm_us": round(1e6 * result.algorithm_seconds / n, 1),
           "evaluator_us": round(1e6 * result.evaluator_seconds / n, 1),
           "commits": result.commits, "hypervolume": round(result.hypervolume, 4)}
    print(row, flush=True)
    return row


def run_optuna(storage: str, n: int, folder: Path) -> dict:
    """Optuna's own loops: in memory, ``optimize`` with the random sampler; on SQLite,
    a random config recorded with ``add_trial``, one transaction per evaluation."""
    name = f"optuna-{storage}-{n}"
    distributions = SPACE.optuna_distributions()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage_url(storage, folder, name),
                                directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    stamps: list[float] = []
    start = time.perf_counter()
    if storage == "memory":
        def objective(trial: optuna.Trial) -> tuple[float, float]:
            values = {}
            for gene in SPACE.genes:  # only the active genes, as the space defines them
                if gene.active_if is None or gene.active_if.holds(values):
                    values[gene.name] = trial._suggest(gene.name, distributions[gene.name])
            m = metrics(SPACE.config(values))
            return m["accuracy"], m["latency_ms"]

        study.optimize(objective, n_trials=n,
                       callbacks=[lambda *_: stamps.append(time.perf_counter() - start)])
        how = "optimize, random sampler"
    else:
        rng = np.random.default_rng(0)
        for _ in range(n):
            config = SPACE.sample(rng)
            m = metrics(config)
            params = config.to_dict()
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: distributions[k] for k in params},
                values=[m["accuracy"], m["latency_ms"]]))
            stamps.append(time.perf_counter() - start)
        how = "add_trial per evaluation"
    first, last = tenth_rates(stamps)
    row = {"runner": "optuna", "algorithm": f"random (optuna {how})", "storage": storage,
           "evals": n, "seconds": round(stamps[-1], 3),
           "evals_per_s_first_tenth": round(first), "evals_per_s_last_tenth": round(last),
           "last_over_first_cost": round(first / last, 3)}
    print(row, flush=True)
    return row


def summarise(runs: list[dict]) -> dict:
    """The largest runs' seconds, and the worst last-over-first tenth among the cheap
    algorithms' (at N = 5,000 a tenth is shorter than one commit, so the small runs'
    tenths differ by whether a commit falls in them)."""
    largest = [r for r in runs if r["runner"] == "nas" and r["commit_seconds"] == 1.0
               and r["evals"] == SCALES[r["algorithm"]][1]]
    return {
        "largest_runs": {f"{r['algorithm']}/{r['storage']}": r["seconds"] for r in largest},
        "median_loop_overhead_us": statistics.median(
            r["loop_overhead_us"] for r in runs if r["runner"] == "nas"),
        "worst_last_over_first_cost_largest_runs": max(
            r["last_over_first_cost"] for r in largest if r["algorithm"] in CHEAP),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (not written)")
    args = parser.parse_args()
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for algorithm, scales in SCALES.items():
            for storage in ("memory", "sqlite"):
                for n in scales[:1] if args.quick else scales:
                    runs.append(run_platform(algorithm, storage, n // 10 if args.quick else n,
                                             folder))
        baseline_n = 500 if args.quick else 5_000
        runs.append(run_optuna("memory", baseline_n, folder))
        runs.append(run_optuna("sqlite", baseline_n // 5, folder))
        runs.append(run_platform("random", "sqlite", baseline_n // 5, folder, commit_seconds=0))
    summary = summarise(runs)
    print(summary)
    if not args.quick:
        write_results(OUT, {"budget_ms": BUDGET_MS, "space": SPACE.name, "runs": runs,
                            "summary": summary}, started)


if __name__ == "__main__":
    main()
