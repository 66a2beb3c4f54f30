"""Joint search of architecture and bits (SimQ-NAS) against quantizing an fp32 search.

Per family (HAT, OFA) and seed, on ``local-cpu`` (latency measured with torch's int8
kernels), objectives accuracy, latency and size:

- **joint**: ``--quantize mixed`` (the default search over the joint space), N evaluations;
- **fp32 + int8**: an fp32 search of N evaluations, then every subnet of its front also
  as uniform int8 (its front and their int8 versions are both offered);
- **fp32 + milp**: the same fp32 front, then HAWQ-V3's integer program per subnet at
  three size budgets between its int8 and fp32 sizes (plus the fp32 subnets).

Equal evaluations: the joint search is compared, on the first N + k of its trials, with
a baseline that made N search evaluations and k post-hoc ones. Hypervolume is normalised
as the search's own (reference: the latency budget, the largest fp32 subnet's size,
error 1). Also reported, as SimQ-NAS does: at
the accuracy of the best uniform-int8 subnet, the lowest latency and size the joint
front reaches, as ratios to that subnet's.

Run: ``python benchmarks/bench_quant_joint.py [--evals N] [--seeds K]`` (default 20, 5;
about 15 minutes per family on 2 cores at 20, 25 at 60); writes
``results/quant_joint-<N>evals.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_results  # noqa: E402

from nas._job import SearchRequest, prepare_search, run_prepared  # noqa: E402
from nas._pareto import hypervolume
from nas.quant import BITS_PREFIX, calibration_batches  # noqa: E402
from nas.quant._evaluator import QuantizedEvaluator  # noqa: E402
from nas.quant._hawq import hawq_policy, subnet_sensitivity  # noqa: E402
from nas.quant._policy import joint_space  # noqa: E402
from nas.studies._pareto import normalised_points  # noqa: E402

FAMILIES = {"hat": 8.0, "ofa": 6.0}
"""Family -> latency budget (ms on local-cpu here; generous: int8 is slower at batch 1)."""
EVAL_LIMIT = 200
MILP_FRACTIONS = (0.25, 0.5, 0.75)
"""Size budgets of the integer program, between a subnet's int8 and fp32 sizes."""
RESULTS = Path(__file__).parent / "results"
"""Written to ``quant_joint-<N>evals.json``."""


def _request(family: str, budget: float, evals: int, seed: int, quantize: str,
             storage: str) -> SearchRequest:
    return SearchRequest(supernet=family, hardware="local-cpu", budget_ms=budget, evals=evals,
                         seed=seed, study=f"{family}-{quantize}-{seed}", storage=storage,
                         eval_limit=EVAL_LIMIT, quantize=quantize, size_objective=True)


def _hv(metrics: list[dict], problem) -> float:
    feasible = [m for m in metrics if problem.is_feasible(m)]
    return hypervolume(normalised_points(feasible, problem), [1.0] * len(problem.objectives))


def run_seed(family: str, budget: float, evals: int, seed: int, storage: str) -> dict:
    fp32 = prepare_search(_request(family, budget, evals, seed, "none", storage))
    fp32_result = run_prepared(fp32, progress=False)
    supernet, task, target = fp32.supernet, fp32.task, fp32.target
    mixed = QuantizedEvaluator(supernet, task, target, mode="mixed", eval_limit=EVAL_LIMIT,
                               space=joint_space(supernet.space, supernet.quant_units(),
                                                 target.quant_bits))
    units = [u.name for u in supernet.quant_units()]
    fp32_points = [p.metrics for p in fp32_result.pareto]
    int8_points, milp_points = [], []
    batches = calibration_batches(task)
    for point in fp32_result.pareto:
        config = point.config
        uniform = mixed.evaluate({**config, **{f"{BITS_PREFIX}{u}": 8 for u in units}})
        int8_points.append(uniform)
        model, layers, omega = subnet_sensitivity(supernet, task, supernet.space.config(config),
                                                  (32, 8), batches=batches)
        for fraction in MILP_FRACTIONS:
            cap = uniform["size_mb"] + fraction * (point.metrics["size_mb"] - uniform["size_mb"])
            policy, _ = hawq_policy(omega, model, layers, size_budget_mb=cap)
            bits = {f"{BITS_PREFIX}{u}": policy.get(u, 32) for u in units}
            milp_points.append(mixed.evaluate({**config, **bits}))
    # equal evaluations: the joint search gets the baseline's search plus its post-hoc ones
    with_int8, with_milp = evals + len(int8_points), evals + len(milp_points)
    joint = prepare_search(_request(family, budget, with_milp, seed, "mixed", storage))
    run_prepared(joint, progress=False)
    joint_trials = sorted(joint.study.trials(), key=lambda t: t.number)
    problem = joint.problem
    hv_int8 = _hv([t.metrics for t in joint_trials[:with_int8]], problem)
    hv_milp = _hv([t.metrics for t in joint_trials[:with_milp]], problem)
    best_int8 = max((m for m in int8_points if problem.is_feasible(m)),
                    key=lambda m: m["accuracy"], default=None)
    ratios = None
    matched = [t.metrics for t in joint_trials
               if best_int8 is not None and problem.is_feasible(t.metrics)
               and t.metrics["accuracy"] >= best_int8["accuracy"]]
    if matched:
        ratios = {"latency_x": best_int8["latency_ms"] / min(m["latency_ms"] for m in matched),
                  "size_x": best_int8["size_mb"] / min(m["size_mb"] for m in matched)}
    return {
        "evaluations_vs_int8": with_int8, "evaluations_vs_milp": with_milp,
        "hv_joint_at_int8_evals": hv_int8,
        "hv_fp32_then_int8": _hv(fp32_points + int8_points, problem),
        "hv_joint_at_milp_evals": hv_milp,
        "hv_fp32_then_milp": _hv(fp32_points + milp_points, problem),
        "ratios_vs_best_uniform_int8": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evals", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for family in args.families.split(","):
            runs = []
            for seed in range(args.seeds):
                runs.append(run_seed(family, FAMILIES[family], args.evals, seed, storage))
                print(family, seed, {k: v for k, v in runs[-1].items() if k.startswith("hv")},
                      flush=True)
            keys = ("hv_joint_at_int8_evals", "hv_fp32_then_int8", "hv_joint_at_milp_evals",
                    "hv_fp32_then_milp")
            median = {key: statistics.median(r[key] for r in runs) for key in keys}
            results[family] = {
                "budget_ms": FAMILIES[family], "median": median,
                "joint_beats_int8": median[keys[0]] > median[keys[1]],
                "joint_beats_milp": median[keys[2]] > median[keys[3]],
                "runs": runs,
            }
            print(family, median, flush=True)
    write_results(RESULTS / f"quant_joint-{args.evals}evals.json", {
        "what": "joint bits+architecture search vs fp32 search then uniform int8 / then "
                "HAWQ milp, local-cpu, objectives accuracy, latency, size",
        "evals": args.evals, "seeds": args.seeds, "eval_limit": EVAL_LIMIT,
        "families": results}, started)


if __name__ == "__main__":
    main()
