"""The shape memory model against measurements, per supernet family.

What: for each supernet with a memory model (``hat``, ``ofa``, ``sortednet``,
``matformer``, ``nb201``), the smallest, the largest and ``N`` random subnets (seed 0): peak memory
(weights plus the
activation peak of one run of the task's batch-1 latency probe, KV cache included)
measured here by ``local-cpu`` against :data:`nas.MEMORY_MODELS`' estimate from the
subnet's shapes. Beside it the baseline "weights only" (the estimate's weights, no
activations), the figure one gets without a model of the activations.

Why: targets without a measurement (rpi4, xeon, titanxp, local-cpu-model, user targets)
search ``--memory-budget`` on the model; ``nas hw show`` states its error.

Writes ``benchmarks/results/memory_model.json`` and each family's summary to
``hardware/data/memory_model.json`` (what ``nas hw show`` reads).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_memory_model.py [--samples 20]``
(about a minute).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _results import write_results

import nas
from nas._hardware import model_memory
from nas.hardware._memory_model import ERRORS_FILE

OUT = Path(__file__).resolve().parent / "results" / "memory_model.json"
SUPERNETS = ("hat", "ofa", "sortednet", "matformer", "nb201")


def ape(estimate: float, measured: float) -> float:
    return abs(estimate - measured) / measured


def family_rows(name: str, samples: int) -> list[dict[str, float]]:
    """Measured and modelled bytes of the smallest, the largest and ``samples`` random
    subnets of supernet ``name``."""
    supernet = nas.get_supernet(name)
    task = nas.get_task(str(supernet.task_name))
    target = nas.get_hardware("local-cpu")
    rng = np.random.default_rng(0)
    space = supernet.space
    configs = {c.key: c for c in [space.smallest(), space.largest(),
                                  *(space.sample(rng) for _ in range(samples))]}
    rows = []
    for config in configs.values():
        measured = target.memory(supernet, config, task)
        modelled = model_memory(supernet.describe(config), task.workload())
        rows.append({"config": config.key, "measured_bytes": measured.peak_bytes,
                     "measured_activation_bytes": measured.activation_bytes,
                     "modelled_bytes": modelled.peak_bytes,
                     "weights_only_bytes": modelled.weights_bytes})
    return rows


def summary(rows: list[dict[str, float]], column: str) -> dict[str, float]:
    errors = np.array([ape(r[column], r["measured_bytes"]) for r in rows])
    return {"mape": round(float(errors.mean()), 5), "max_ape": round(float(errors.max()), 5),
            "n": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    families, details = {}, {}
    for name in SUPERNETS:
        rows = family_rows(name, args.samples)
        family = nas.get_supernet(name).family
        families[family] = summary(rows, "modelled_bytes")
        details[family] = {"model": families[family],
                           "baseline_weights_only": summary(rows, "weights_only_bytes"),
                           "subnets": rows}
        print(f"{family}: model {families[family]}, weights only "
              f"{details[family]['baseline_weights_only']}")
    ERRORS_FILE.write_text(json.dumps({
        "what": "peak memory at batch 1, shape model against local-cpu measurements "
                "(benchmarks/bench_memory_model.py)",
        "families": families}, indent=2) + "\n")
    write_results(OUT, {"samples": args.samples, "families": details}, started)


if __name__ == "__main__":
    main()
