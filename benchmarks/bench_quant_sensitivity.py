"""HAWQ's cheap sensitivity ranking vs the measured damage of quantizing each unit alone.

For the largest subnet of HAT, OFA and MatFormer: Omega per unit at 4, 3 and 2 bits
(Hessian trace on the task's 128 calibration samples times the squared weight error),
against (a) the task loss increase on 512 other training samples and (b) the validation
accuracy drop, when that unit's weights alone go to that width. The issue's figure:
Spearman >= 0.7. Run: ``python benchmarks/bench_quant_sensitivity.py`` (a few minutes).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import write_results  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import nas  # noqa: E402
from nas._evaluator import accepts_keyword  # noqa: E402
from nas.quant import calibration_batches, fake_quantize  # noqa: E402
from nas.quant._hawq import subnet_sensitivity, task_loss  # noqa: E402

FAMILIES = ("hat", "ofa", "matformer")
BITS = (4, 3, 2)
HUTCHINSON = 32
EVAL_LIMIT = 1000
OUT = Path(__file__).parent / "results" / "quant_sensitivity.json"


def measure(family: str) -> dict:
    supernet = nas.get_supernet(family)
    task = nas.get_task(supernet.task_name)
    arch = supernet.space.largest()
    started = time.perf_counter()
    model, layers, omega = subnet_sensitivity(supernet, task, arch, BITS,
                                              batches=calibration_batches(task),
                                              samples=HUTCHINSON)
    seconds = time.perf_counter() - started
    held_out = calibration_batches(task, samples=512, seed=1)
    loss = task_loss(task, held_out)

    def with_grad_off(m) -> float:
        with torch.no_grad():
            return float(loss(m))

    base_loss = with_grad_off(model)
    fast = {"per": False} if accepts_keyword(task.evaluate, "per") else {}

    def accuracy(m) -> float:
        return task.evaluate(m, limit=EVAL_LIMIT, **fast)["accuracy"]

    base_acc = accuracy(model)
    by_bits = {}
    for bits in BITS:
        rows = {}
        for unit, names in layers.items():
            quantized = fake_quantize(copy.deepcopy(model), {n: bits for n in names}, None)
            rows[unit] = {
                "omega": omega[unit][bits],
                "loss_increase": with_grad_off(quantized) - base_loss,
                "accuracy_drop": base_acc - accuracy(quantized),
            }
        scores = [r["omega"] for r in rows.values()]
        by_bits[str(bits)] = {
            "spearman_vs_loss_increase": float(spearmanr(
                scores, [r["loss_increase"] for r in rows.values()]).statistic),
            "spearman_vs_accuracy_drop": float(spearmanr(
                scores, [r["accuracy_drop"] for r in rows.values()]).statistic),
            "largest_loss_increase": max(r["loss_increase"] for r in rows.values()),
            "per_unit": rows,
        }
    return {"units": len(layers), "sensitivity_seconds": seconds, "bits": by_bits}


def main() -> None:
    started = time.perf_counter()
    results = {}
    for family in FAMILIES:
        results[family] = row = measure(family)
        for bits, figures in row["bits"].items():
            print(f"{family} {bits}-bit: {row['units']} units, Spearman vs loss increase "
                  f"{figures['spearman_vs_loss_increase']:.3f}, vs accuracy drop "
                  f"{figures['spearman_vs_accuracy_drop']:.3f} (largest increase "
                  f"{figures['largest_loss_increase']:.4f} nats)")
    write_results(OUT, {"what": "HAWQ Omega vs quantizing each unit alone (weights only), "
                                "largest subnets, loss on 512 held-out training samples",
                        "hutchinson_samples": HUTCHINSON, "eval_limit": EVAL_LIMIT,
                        "families": results}, started)


if __name__ == "__main__":
    main()
