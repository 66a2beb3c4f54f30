"""Uniform int8 of every family's largest and smallest subnet: fp32 vs fake-quantized vs
torch's real int8 kernels, side by side, with sizes and local-cpu latencies.

The issue's figures: accuracy within 1% relative of fp32, and fake vs real within 0.2
points. Run: ``python benchmarks/bench_quant_uniform.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_results  # noqa: E402

import nas  # noqa: E402
from nas.hardware import LocalCPUTarget  # noqa: E402
from nas.quant import (  # noqa: E402
    calibrate,
    calibration_batches,
    fake_quantize,
    int8_kernels,
    module_bits,
    size_bytes,
    uniform_policy,
)

FAMILIES = ("hat", "ofa", "matformer", "flexibert", "flexibert-minilm", "sortednet")
EVAL_LIMIT = 1000
OUT = Path(__file__).parent / "results" / "quant_uniform.json"


def one(supernet: nas.Supernet, task: nas.Task, config: nas.Config, target: LocalCPUTarget,
        batches: list) -> dict:
    model = supernet.extract(config).eval()
    modules = supernet.quant_modules(config)
    bits = module_bits(model, modules, uniform_policy(modules, 8))
    ranges = calibrate(model, bits, task, batches)
    fake = fake_quantize(copy.deepcopy(model), bits, ranges)
    real = int8_kernels(copy.deepcopy(fake))
    scores = {name: task.evaluate(m, split="validation", limit=EVAL_LIMIT)["accuracy"]
              for name, m in (("fp32", model), ("fake_int8", fake), ("real_int8", real))}
    fp32_ms = target.latency_ms(supernet, config, task)
    int8_ms = target.quantized_latency_ms(supernet, config, fake, task)
    return {
        **{f"accuracy_{k}": v for k, v in scores.items()},
        "relative_drop": (scores["fp32"] - scores["fake_int8"]) / scores["fp32"],
        "fake_vs_real_points": 100 * abs(scores["fake_int8"] - scores["real_int8"]),
        "layers_int8": len(bits), "layers_calibrated": len(ranges),
        "size_mb_fp32": size_bytes(model, {}) / 1e6,
        "size_mb_int8": size_bytes(model, bits, calibrated=len(ranges)) / 1e6,
        "latency_ms_fp32": fp32_ms, "latency_ms_int8": int8_ms,
    }


def main() -> None:
    started = time.perf_counter()
    target = LocalCPUTarget()
    rows = {}
    for family in FAMILIES:
        supernet = nas.get_supernet(family)
        task = nas.get_task(supernet.task_name)
        batches = calibration_batches(task)
        for which in ("largest", "smallest"):
            config = getattr(supernet.space, which)()
            rows[f"{family}/{which}"] = row = one(supernet, task, config, target, batches)
            print(f"{family:17s} {which:8s} fp32 {row['accuracy_fp32']:.4f} "
                  f"fake {row['accuracy_fake_int8']:.4f} real {row['accuracy_real_int8']:.4f} "
                  f"size {row['size_mb_fp32']:.2f}->{row['size_mb_int8']:.2f} MB "
                  f"latency {row['latency_ms_fp32']:.2f}->{row['latency_ms_int8']:.2f} ms")
    write_results(OUT, {
        "what": "uniform int8 (W8 per channel, A8 static per tensor, 128 calibration samples)",
        "eval_limit": EVAL_LIMIT, "subnets": rows,
        "max_fake_vs_real_points": max(r["fake_vs_real_points"] for r in rows.values()),
        "within_1pct_relative": {k: r["relative_drop"] <= 0.01 for k, r in rows.items()},
    }, started)


if __name__ == "__main__":
    main()
