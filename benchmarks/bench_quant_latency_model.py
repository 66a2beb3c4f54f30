"""The quantized latency model of ``local-cpu-model`` against measured int8 latencies.

120 random HAT subnets, each timed in fp32 and under a random fp32/int8 policy on
torch's int8 kernels (the calibration's protocol: thread CPU time, fastest run); the
model is fitted on 90 and judged on the other 30, against:

- the calibration protocol's int8 figures (what the model is fitted to), and
- ``local-cpu``'s own figures for the same quantized subnets (wall-clock median), the
  target a search would otherwise measure;

side by side with two baselines on the same rows: the fp32 prediction as it is (no
quantization modelled), and the fp32 prediction times the mean int8/fp32 ratio of the
training subnets. The issue's bar: Kendall >= 0.8 and MAPE <= 10% on the 30.

Run: ``python benchmarks/bench_quant_latency_model.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_results  # noqa: E402

import nas  # noqa: E402
from nas.hardware import LocalCPUTarget  # noqa: E402
from nas.hardware._latency_model import heldout_split  # noqa: E402
from nas.hardware._local_model import (  # noqa: E402
    HELDOUT_FRACTION,
    fit_timings,
    predict_int8_ms,
    predict_ms,
    prediction_errors,
    time_calibration_subnets,
)
from nas.quant import calibration_batches  # noqa: E402
from nas.quant._subnet import quantized_subnet  # noqa: E402

N = 120
SEED = 0
OUT = Path(__file__).parent / "results" / "quant_latency_model.json"


def main() -> None:
    started = time.perf_counter()
    supernet = nas.get_supernet("hat")
    task = nas.get_task(supernet.task_name)
    timings = time_calibration_subnets(supernet, task, n=N, seed=SEED, quantized=True,
                                       progress=True)
    train, test = heldout_split(N, test_fraction=HELDOUT_FRACTION, seed=SEED)
    coefficients, costs = fit_timings(timings, train)
    model = predict_int8_ms(coefficients, costs, timings, test)
    fp32 = predict_ms(coefficients, [timings.shapes[i] for i in test], timings.workload)
    ratio = float(np.mean(timings.int8_ms[train] / timings.total_ms[train]))
    predictions = {"model": model, "fp32_as_is": fp32, "fp32_times_mean_ratio": fp32 * ratio}

    local = LocalCPUTarget()
    batches = calibration_batches(task)
    measured_here = np.array([
        local.quantized_latency_ms(supernet, quantized.arch, quantized.fake_quantized(), task)
        for quantized in (quantized_subnet(supernet, task, timings.joint[i], mode="mixed",
                                           batches=batches) for i in test)])
    against = {"calibration_protocol": timings.int8_ms[test], "local_cpu": measured_here}
    errors = {f"{name}_vs_{where}": prediction_errors(measured, predicted)
              for name, predicted in predictions.items() for where, measured in against.items()}
    for key, e in errors.items():
        print(f"{key:48s} MAPE {e['mape']:6.1%}  Kendall {e['kendall_tau']:.2f}")
    write_results(OUT, {
        "what": "local-cpu-model's quantized latency model (fp32 structured model plus "
                "per-call, per-element and per-MAC int8 costs) on held-out HAT subnets",
        "n": N, "heldout": len(test), "seed": SEED,
        "costs": costs.to_dict(), "mean_train_ratio": ratio,
        "int8_over_fp32_range": [float(np.min(timings.int8_ms / timings.total_ms)),
                                 float(np.max(timings.int8_ms / timings.total_ms))],
        "errors": errors,
        "meets_bar": {k: e["kendall_tau"] >= 0.8 and e["mape"] <= 0.10
                      for k, e in errors.items() if k.startswith("model_")},
    }, started)


if __name__ == "__main__":
    main()
