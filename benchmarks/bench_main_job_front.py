"""How much of the main job's front each search finds (issue 16, item 5).

The main job is ``nas search --supernet hat --hw rpi4 --budget 50ms`` (120 evaluations).
Its true front is unknown, so the yardstick is a *reference front*: the non-dominated
union of every run below (the default, ``screened``, and the former defaults ``ehvi`` and
``hybrid``, which is ``ehvi`` up to 250, at 120 evaluations; NSGA-II and random search at
600; one seed each, 0, the main job's). Each run's gap is
the hypervolume it leaves to the reference front's, with accuracy and latency scaled to
the reference front's range (reference point 1.1, as ``nas bench search``), feasible
trials only (latency <= 50 ms). Every run's trials are kept in order, so the 600-
evaluation runs are also scored at 120.

    python benchmarks/bench_main_job_front.py [--runs default:120,nsga2:600,...]

Writes ``benchmarks/results/main_job_front.json``. Costs 0.4 s per evaluation on an
idle machine, 3-6 s on a loaded one (one thread); ``--workdir`` keeps the studies so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results  # noqa: E402

from nas._job import SearchRequest, prepare_search, run_prepared  # noqa: E402
from nas._pareto import hypervolume
from nas.studies._pareto import pareto_front  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "main_job_front.json"
RUNS = "default:120,ehvi:120,nsga2:600,random:600"
SCORED_AT = (120, 250, 600)
REFERENCE = 1.1


def run(algorithm: str, evals: int, folder: Path) -> dict:
    """One main-job search; its trials as minimisation-form points, in trial order."""
    request = SearchRequest(supernet="hat", hardware="rpi4", budget_ms=50.0, evals=evals,
                            seed=0, algorithm=algorithm, study=f"main-{algorithm}-{evals}",
                            storage=f"sqlite:///{folder / f'{algorithm}-{evals}.db'}")
    prepared = prepare_search(request)
    start = time.perf_counter()
    result = run_prepared(prepared, progress=False)
    seconds = time.perf_counter() - start
    problem = prepared.problem
    trials = prepared.study.trials()
    points = [problem.to_minimization(t.metrics) if t.feasible and not t.failed else None
              for t in trials]
    return {"algorithm": algorithm, "evals": evals, "seconds": seconds,
            "search_hypervolume": result.hypervolume,
            "objectives": [o.name for o in problem.objectives],
            "signs": [o.sign for o in problem.objectives],
            "points": [None if p is None else [float(v) for v in p] for p in points]}


def front(points: list) -> np.ndarray:
    P = np.array([p for p in points if p is not None], dtype=float).reshape(-1, 2)
    return P[pareto_front(P)] if len(P) else P


def gap(points: list, low: np.ndarray, span: np.ndarray, hv_ref: float) -> float:
    F = front(points)
    hv = hypervolume((F - low) / span, [REFERENCE, REFERENCE]) if len(F) else 0.0
    return 1.0 - hv / hv_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=RUNS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the study databases here (a rerun resumes them); "
                             "default: a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in args.runs.split(","):
            name, evals = spec.split(":")
            runs.append(run(name, int(evals), folder))
            print(f"{name} at {evals}: {runs[-1]['seconds']:.0f} s", flush=True)
    union = front([p for r in runs for p in r["points"]])
    low, span = union.min(axis=0), np.ptp(union, axis=0)
    span = np.where(span > 0, span, 1.0)
    hv_ref = hypervolume((union - low) / span, [REFERENCE, REFERENCE])
    table = []
    for r in runs:
        for k in sorted({*(a for a in SCORED_AT if a <= r["evals"]), r["evals"]}):
            g = gap(r["points"][:k], low, span, hv_ref)
            table.append({"algorithm": r["algorithm"], "evals": k, "hv_gap": g,
                          "front_size": len(front(r["points"][:k]))})
            print(f"{r['algorithm']:8s} at {k:4d}: gap {100 * g:.1f}%")
    signs = np.array(runs[0]["signs"], dtype=float)
    write_results(OUT, {
        "command": "nas search --supernet hat --hw rpi4 --budget 50ms (seed 0)",
        "reference_front": "non-dominated union of every run below (one seed each)",
        "objectives": runs[0]["objectives"],
        "reference_front_points": (union * signs).tolist(),
        "gaps": table,
        "runs": runs,
    }, started)


if __name__ == "__main__":
    main()
