"""The latency model that pruning targets, calibrated on MiniLM and MatFormer, held out.

What: :func:`nas.compress._latency.calibrate` on the pretrained MiniLM (6 blocks, embed
384) and on the shipped MatFormer supernet's largest subnet (4 blocks, embed 128), each
as a ``DenseTransformer`` at 64 tokens on this CPU (one thread, thread CPU time, fastest
run): ``N`` shapes derived from the model, a quarter held out. Beside the structured
model, the baseline "latency proportional to MACs" (one non-negative coefficient, fitted
by the same NNLS on the same fitting shapes) on the same held-out shapes. Last, each
converted model with its real weights timed by :func:`~nas.compress._latency.measure_ms`
against the structured model's prediction (calibration uses random weights).

Why: NViT's latency-aware pruning ranks structures by saliency per millisecond saved, so
the latency model must price a head, a unit or a block, not just total MACs.

Writes ``benchmarks/results/compress_latency.json``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_compress_latency.py [--samples 32]``
(under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import nas
from nas.compress._convert import bert_from_minilm, transformer_from_matformer
from nas.compress._latency import (
    Sample,
    calibrate,
    latency_errors,
    measure_ms,
    transformer_macs,
)
from nas.compress._transformer import DenseTransformer
from nas.hardware._latency_model import nonnegative_fit
from nas.supernets.tasks._minilm import load_minilm

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "compress_latency.json"
TOKENS, SAMPLES = 64, 32


def models() -> dict[str, DenseTransformer]:
    """The pretrained MiniLM and the shipped MatFormer's largest subnet, converted."""
    supernet = nas.get_supernet("matformer")
    return {"minilm": bert_from_minilm(load_minilm()[0]),
            "matformer-largest": transformer_from_matformer(
                supernet.extract(supernet.space.largest()))}


def macs_baseline(samples: Sequence[Sample], tokens: int) -> dict[str, float]:
    """Held-out errors of ``latency = k * MACs``, ``k`` fitted on the fitting samples."""
    macs = np.array([[transformer_macs(s.config, tokens) / 1e6] for s in samples])
    measured = np.array([s.measured_ms for s in samples])
    held = np.array([s.heldout for s in samples])
    k = nonnegative_fit(macs[~held], measured[~held])
    return {"ms_per_mmac": float(k[0]), **latency_errors(measured[held], macs[held] @ k)}


def run(name: str, model: DenseTransformer, samples: int, seed: int) -> dict:
    start = time.perf_counter()
    result = calibrate(model, tokens=TOKENS, samples=samples, seed=seed)
    real_ms = measure_ms(model, tokens=TOKENS)
    predicted_ms = result.model.predict_ms(model.subnet_config())
    out = {
        "config": {k: v for k, v in model.subnet_config().items() if k != "layers"}
        | {"blocks": len(model.blocks), "block": model.subnet_config()["layers"][0]},
        "structured": {"heldout": result.heldout, "coefficients": result.model.to_dict()},
        "macs_proportional": {"heldout": macs_baseline(result.samples, TOKENS)},
        "full_model_real_weights": {"measured_ms": real_ms, "predicted_ms": predicted_ms,
                                    "ape": abs(predicted_ms - real_ms) / real_ms},
        "seconds": round(time.perf_counter() - start, 1),
        "samples": result.to_dict()["samples"],
        "environment": result.environment,
    }
    s, b = out["structured"]["heldout"], out["macs_proportional"]["heldout"]
    print(f"{name}: held-out median APE {s['median_ape']:.1%} (MACs-proportional "
          f"{b['median_ape']:.1%}), Spearman {s['spearman']:.3f} ({b['spearman']:.3f}); "
          f"real weights {real_ms:.3f} ms, predicted {predicted_ms:.3f} ms; "
          f"{out['seconds']:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    start, load_before = time.perf_counter(), os.getloadavg()
    results = {name: run(name, m, args.samples, args.seed) for name, m in models().items()}
    document = {
        "benchmark": "structured latency model of a DenseTransformer (per call, per block, "
                     "per linear and per attention MMAC; NNLS) vs latency proportional to "
                     "MACs, held-out shapes derived from each model",
        "tokens": TOKENS, "samples": args.samples, "heldout_fraction": 0.25, "seed": args.seed,
        "device": "cpu", "protocol": "one thread, thread CPU time, fastest run",
        "results": results,
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({document['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
