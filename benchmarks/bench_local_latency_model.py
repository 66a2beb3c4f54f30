"""The ``local-cpu-model`` latency model on held-out subnets measured here, against baselines.

What: ``N`` distinct random subnets of the shipped HAT G2P supernet (seeded), each timed
on this CPU with the profiler (one thread) under two protocols: the calibrated target's
(thread CPU time, fastest run) and ``local-cpu``'s figure (wall clock, median). Half of
them fit each model, the other half score it: median and 90th-percentile absolute
percentage error, MAPE, Spearman and Kendall. Models, in increasing fidelity:

- ``roofline``: analytic, no fit (:func:`~nas.hardware._local_model.roofline_ms` with
  this machine's single-thread matmul peak and copy bandwidth, measured here);
- ``macs-proportional``: latency = k x total MACs, k by least squares;
- ``rpi4-scaled``, ``xeon-scaled``: the shipped ``rpi4`` / ``xeon`` structured models
  (HAT's data, implementation calibration), times a scale fitted by least squares;
- ``structured-totals``: the structured model fitted by NNLS on whole-probe figures
  only (:func:`~nas.hardware._latency_model.fit_total_coefficients`);
- ``calibrated``: what ``local-cpu-model`` fits (encoder and decoder terms fitted
  separately from the encoder's own figure, :func:`~nas.hardware._local_model.fit_local`).

Why: the issue's target is a median error of at most 10% on 50 held-out subnets for the
calibrated model. This VM is shared, and a subnet's figure moves between sittings, so
the benchmark also measures that noise: ``REPEATS`` of the held-out subnets are timed a
second time, and the median ``|a - b| / b`` says how far any model's error could fall.

How: the subnets are split by a seeded permutation (first ``TRAIN`` fit, the rest
score), and measured in another seeded order, the second timings of the repeated subnets
included, so that held-out and fitting subnets, and first and second timings, are mixed
in time: a spell of load hits both alike. Writes
``benchmarks/results/local_latency_model.json`` (every figure, every subnet's timings).

Run: ``python benchmarks/bench_local_latency_model.py [--n 100] [--train 50]`` (about
two minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nas
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task, Workload
from nas.hardware._hat_targets import HATLatencyTarget
from nas.hardware._latency_dataset import sample_new_configs
from nas.hardware._latency_model import fit_total_coefficients
from nas.hardware._local_model import (
    SETTINGS,
    fastest_ms,
    fit_local,
    measure_subnet,
    predict_ms,
    probe_workload,
    roofline_ms,
    subnet_shape,
)
from nas.hardware._macs import DENSE_HAT_DECODING, Seq2SeqShape, seq2seq_macs
from nas.hardware._profile import environment
from nas.hardware._timing import time_ms, torch_threads

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "local_latency_model.json"
N, TRAIN, REPEATS = 100, 50, 10
GOAL_MEDIAN_APE = 0.10
PROTOCOLS = ("cpu-fastest", "wall-median")
"""The calibrated target's protocol, then ``local-cpu``'s."""


# -- scoring ------------------------------------------------------------------------------


def ape(measured: Sequence[float], predicted: Sequence[float]) -> np.ndarray:
    """Absolute percentage errors ``|predicted - measured| / measured`` (fractions)."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    return np.abs(predicted - measured) / measured


def score(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Median and 90th-percentile APE (numpy's linear interpolation), MAPE, Spearman's rho
    and Kendall's tau (rank agreement: what a search needs), and the count."""
    from scipy.stats import kendalltau, spearmanr

    errors = ape(measured, predicted)
    return {
        "median_ape": float(np.median(errors)),
        "p90_ape": float(np.quantile(errors, 0.9)),
        "mape": float(np.mean(errors)),
        "spearman": float(spearmanr(measured, predicted).statistic),
        "kendall": float(kendalltau(measured, predicted).statistic),
        "n": len(errors),
    }


def fit_scale(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares ``k`` of ``y = k x`` (a line through the origin)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(x @ y / (x @ x))


def repeat_noise(first: Sequence[float], second: Sequence[float]) -> float:
    """Median ``|a - b| / b`` over subnets timed twice: the error a perfect model would
    show against a single timing."""
    return float(np.median(ape(second, first)))


# -- the plan and the measurements --------------------------------------------------------


def plan(n: int, train: int, repeats: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Fitting and held-out subnet indices, and the order to time them in: every index
    once, the first ``repeats`` held-out ones twice, all shuffled together."""
    if not 3 <= train <= n - repeats or repeats < 1:
        raise ValueError(f"need 3 <= train <= n - repeats and repeats >= 1, got {n=}, "
                         f"{train=}, {repeats=}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    fit, held = np.sort(order[:train]), np.sort(order[train:])
    jobs = [*range(n), *held[:repeats].tolist()]
    return fit, held, [int(j) for j in rng.permutation(jobs)]


def measure(supernet: Supernet, config: Config, task: Task) -> dict[str, tuple[float, float]]:
    """``(encoder_ms, total_ms)`` of one subnet under each protocol."""
    cpu = measure_subnet(supernet, config, task)
    wall = measure_subnet(supernet, config, task, clock=time.perf_counter)
    return {"cpu-fastest": (fastest_ms(cpu.encoder), fastest_ms(cpu.total)),
            "wall-median": (wall.encoder.median_ms, wall.total.median_ms)}


def machine_roofline() -> dict[str, float]:
    """This CPU's single-thread fp32 matmul peak (GFLOP/s, 512x512 products) and copy
    bandwidth (GB/s read + written, 256 MB buffers): each the fastest of 5 runs."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    src, dst = torch.randn(64 * 2**20), torch.empty(64 * 2**20)
    with torch_threads(1):
        matmul = min(time_ms(lambda: a @ b, warmup=3, repeats=5)) / 1e3
        copy = min(time_ms(lambda: dst.copy_(src), warmup=1, repeats=5)) / 1e3
    return {"peak_gflops": 2 * 512**3 / matmul / 1e9,
            "bandwidth_gbs": 2 * src.numel() * src.element_size() / copy / 1e9}


# -- the models ---------------------------------------------------------------------------


def model_predictions(
    shapes: Sequence[Seq2SeqShape],
    workload: Workload,
    encoder_ms: np.ndarray,
    total_ms: np.ndarray,
    fit: np.ndarray,
    held: np.ndarray,
    roofline: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """Each model's predictions of the held-out subnets, fitted on the ``fit`` ones."""
    fit_shapes = [shapes[i] for i in fit]
    held_shapes = [shapes[i] for i in held]
    out = {"roofline": np.array([roofline_ms(s, workload, **roofline) for s in held_shapes])}
    scaled: dict[str, Callable[[Seq2SeqShape], float]] = {
        "macs-proportional": lambda s: seq2seq_macs(s, workload, DENSE_HAT_DECODING).total,
        **{f"{d}-scaled": _hat_model(d, workload) for d in ("rpi4", "xeon")},
    }
    for name, feature in scaled.items():
        k = fit_scale([feature(s) for s in fit_shapes], total_ms[fit])
        out[name] = k * np.array([feature(s) for s in held_shapes])
    totals = fit_total_coefficients(fit_shapes, [workload] * len(fit), total_ms[fit],
                                    scheme=DENSE_HAT_DECODING)
    out["structured-totals"] = predict_ms(totals, held_shapes, workload)
    calibrated = fit_local(fit_shapes, workload, encoder_ms[fit], total_ms[fit])
    out["calibrated"] = predict_ms(calibrated, held_shapes, workload)
    return out


def _hat_model(device: str, workload: Workload) -> Callable[[Seq2SeqShape], float]:
    coefficients = HATLatencyTarget(device).coefficients()
    return lambda s: coefficients.breakdown(s, workload, DENSE_HAT_DECODING).total_ms


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=N, help="subnets measured")
    parser.add_argument("--train", type=int, default=TRAIN, help="of which fit the models")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="held-out subnets "
                        "timed twice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    start, load_before = time.perf_counter(), os.getloadavg()
    supernet = nas.get_supernet("hat")
    task = nas.get_task(supernet.task_name)
    configs = list(sample_new_configs(supernet.space, args.seed, set(), args.n))  # as `nas profile`
    shapes = [subnet_shape(supernet, c) for c in configs]
    workload = probe_workload(task)
    fit, held, order = plan(args.n, args.train, args.repeats, args.seed)
    roofline = machine_roofline()

    timings: dict[int, list[dict[str, tuple[float, float]]]] = {i: [] for i in range(args.n)}
    for step, i in enumerate(order):
        timings[i].append(measure(supernet, configs[i], task))
        if step % 10 == 0:
            print(f"{step}/{len(order)} timed, {time.perf_counter() - start:.0f} s")

    results = {}
    for protocol in PROTOCOLS:
        encoder_ms = np.array([timings[i][0][protocol][0] for i in range(args.n)])
        total_ms = np.array([timings[i][0][protocol][1] for i in range(args.n)])
        twice = [i for i in range(args.n) if len(timings[i]) == 2]
        predictions = model_predictions(shapes, workload, encoder_ms, total_ms, fit, held,
                                        roofline)
        results[protocol] = {
            "repeat_noise": repeat_noise([timings[i][0][protocol][1] for i in twice],
                                         [timings[i][1][protocol][1] for i in twice]),
            "repeated_subnets": len(twice),
            "models": {name: score(total_ms[held], p) for name, p in predictions.items()},
        }
    _report(results)
    load_stretch = np.array([t[0]["wall-median"][1] / t[0]["cpu-fastest"][1]
                             for t in timings.values()])
    fitted = set(fit.tolist())
    document = {
        "benchmark": "local-cpu-model: the structured latency model calibrated here, scored "
                     "on held-out subnets of the HAT G2P space measured here, against baselines",
        "supernet": "hat", "space": supernet.space.name, "task": task.name,
        "workload": {"src_len": workload.src_len, "tgt_len": workload.tgt_len},
        "n": args.n, "train": len(fit), "heldout": len(held), "seed": args.seed,
        "protocols": {
            "cpu-fastest": "thread CPU time, fastest run of the profiler's (local-cpu-model's)",
            "wall-median": "wall clock, median of the profiler's runs (local-cpu's figure)",
        },
        "profiler_settings": dataclasses.asdict(SETTINGS),
        "goal": {"model": "calibrated", "protocol": "cpu-fastest",
                 "median_ape_at_most": GOAL_MEDIAN_APE,
                 "met": results["cpu-fastest"]["models"]["calibrated"]["median_ape"]
                 <= GOAL_MEDIAN_APE},
        "wall_median_over_cpu_fastest": {
            "what": "per subnet, local-cpu's figure over local-cpu-model's (first timings): "
                    "how much the machine's load stretched wall-clock medians",
            **{f"q{q:02d}": float(np.quantile(load_stretch, q / 100)) for q in (10, 50, 90)},
        },
        "roofline_machine": roofline,
        "results": results,
        "environment": environment(),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "seconds": round(time.perf_counter() - start, 1),
        "subnets": [
            {"config": configs[i].to_dict(), "role": "fit" if i in fitted else "heldout",
             "timings": [{p: {"encoder_ms": t[p][0], "total_ms": t[p][1]} for p in PROTOCOLS}
                         for t in timings[i]]}
            for i in range(args.n)
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({document['seconds']:.0f} s)")


def _report(results: Mapping[str, Any]) -> None:
    for protocol, r in results.items():
        print(f"\n{protocol}: repeat noise {r['repeat_noise']:.1%} "
              f"({r['repeated_subnets']} subnets timed twice)")
        print(f"{'model':20s} {'median':>7s} {'p90':>7s} {'MAPE':>7s} {'rho':>6s} {'tau':>6s}")
        for name, s in r["models"].items():
            print(f"{name:20s} {s['median_ape']:7.1%} {s['p90_ape']:7.1%} {s['mape']:7.1%} "
                  f"{s['spearman']:6.3f} {s['kendall']:6.3f}")


if __name__ == "__main__":
    main()
