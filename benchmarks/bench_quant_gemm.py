"""Weight-only int8 and int4 Triton GEMMs vs the fp16 matmul, at decode shapes.

What: ``y = x @ W.T`` with ``x`` fp16 of ``M`` rows (1, 4, 16) and ``W`` of ``K = N =
4096``, as torch's fp16 ``x @ w.T`` (cuBLAS), as
:func:`nas.quant._triton_gemm.int8_weight_only_linear` (int8 weight, fp32 scale per
output channel) and as :func:`~nas.quant._triton_gemm.int4_weight_only_linear` (packed
int4 weight, fp32 scale per group of 128 along K). Each is timed with
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs, median), checked
against the fp32 matmul of its dequantized weight, and reported in microseconds with its
speedup over fp16 and its effective weight bandwidth.

Why: a decode GEMM reads the whole weight for a few rows of activations, so it is memory
bound; int8 halves and int4 quarters the weight bytes, which is the speedup to expect at
best.

Without a CUDA GPU it writes ``"status": "not run: no GPU"`` with the shapes it would
time, and a correctness check of both kernels under Triton's CPU interpreter
(``TRITON_INTERPRET=1``) on a small shape instead.

Writes ``benchmarks/results/quant_gemm.json``.

Run: ``python benchmarks/bench_quant_gemm.py [--rows 1 4 16] [--size 4096]`` (seconds).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from _results import write_results

from nas.quant._quantizers import quantize_weight
from nas.quant._triton_gemm import (
    INT4_GROUP,
    dequantize_int4,
    int4_weight_only_linear,
    int8_weight_only_linear,
    quantize_int4_grouped,
)

RESULTS = Path(__file__).parent / "results" / "quant_gemm.json"
ROWS = (1, 4, 16)
SIZE = 4096
SMALL = {"M": 3, "K": 128, "N": 48, "group": 32}
"""The shape of the CPU-interpreter check."""


def relative_error(y: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute error over the largest |expected|."""
    return float((y.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def operands(m: int, k: int, n: int, group: int, device: str, seed: int = 0) -> dict[str, Any]:
    """fp16 activations, an fp16 weight and its int8 and int4 forms, with each form's fp32
    reference output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).half()
    weight = torch.randn(n, k, generator=g) / k**0.5
    q, scales = quantize_weight(weight, 8)
    packed, scales4 = quantize_int4_grouped(weight, group)
    x32 = x.float()
    out = {
        "x": x, "w": weight.half(), "q": q, "scales": scales, "packed": packed,
        "scales4": scales4, "group": group,
        "expected_fp16": x32 @ weight.half().float().T,
        "expected_int8": x32 @ (q.float() * scales[:, None]).T,
        "expected_int4": x32 @ dequantize_int4(packed, scales4, group).T,
    }  # fmt: skip
    return {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in out.items()}


def runs(o: dict[str, Any]) -> dict[str, Any]:
    """The three GEMMs of one shape, as thunks."""
    return {
        "fp16": lambda: o["x"] @ o["w"].T,
        "int8": lambda: int8_weight_only_linear(o["x"], o["q"], o["scales"]),
        "int4": lambda: int4_weight_only_linear(o["x"], o["packed"], o["scales4"], o["group"]),
    }


def weight_bytes(k: int, n: int, group: int) -> dict[str, int]:
    """Bytes of the weight each GEMM reads (the scales included)."""
    return {"fp16": 2 * n * k, "int8": n * k + 4 * n, "int4": n * k // 2 + 4 * n * (k // group)}


def bench_gpu(rows: list[int], size: int, group: int) -> dict[str, Any]:
    import triton.testing

    results = []
    for m in rows:
        o = operands(m, size, size, group, "cuda")
        row: dict[str, Any] = {"M": m, "K": size, "N": size}
        times = {}
        for name, run in runs(o).items():
            row[f"{name}_max_rel_error"] = relative_error(run(), o[f"expected_{name}"])
            times[name] = triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median")
        nbytes = weight_bytes(size, size, group)
        for name, ms in times.items():
            row[f"{name}_us"] = 1e3 * ms
            row[f"{name}_weight_gb_per_s"] = nbytes[name] / (ms * 1e-3) / 1e9
        row["int8_speedup_vs_fp16"] = times["fp16"] / times["int8"]
        row["int4_speedup_vs_fp16"] = times["fp16"] / times["int4"]
        results.append(row)
        print(f"M={m:2d}  fp16 {row['fp16_us']:7.1f} us  int8 {row['int8_us']:7.1f} us "
              f"(x{row['int8_speedup_vs_fp16']:.2f})  int4 {row['int4_us']:7.1f} us "
              f"(x{row['int4_speedup_vs_fp16']:.2f})")  # fmt: skip
    return {"status": "ok", "gpu": torch.cuda.get_device_name(), "results": results}


def interpreter_check() -> dict[str, Any]:
    """Both kernels under Triton's CPU interpreter on :data:`SMALL`, against the fp32
    matmul of the dequantized weight."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        o = operands(SMALL["M"], SMALL["K"], SMALL["N"], SMALL["group"], "cpu")
        thunks = runs(o)
        start = time.perf_counter()
        errors = {
            f"{name}_max_rel_error": relative_error(thunks[name](), o[f"expected_{name}"])
            for name in ("int8", "int4")
        }
        seconds = time.perf_counter() - start
    except ImportError as err:  # triton missing: nas._extras's one-line message
        return {"status": f"not run: {err}"}
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    tolerance = 4e-3
    passed = all(e <= tolerance for e in errors.values())
    return {"status": "passed" if passed else "FAILED", "shape": SMALL, "dtype": "float16",
            **errors, "tolerance": tolerance, "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="M values")
    parser.add_argument("--size", type=int, default=SIZE, help="K = N")
    parser.add_argument("--group", type=int, default=INT4_GROUP, help="int4 group along K")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()

    result: dict[str, Any] = {
        "benchmark": "weight-only int8 (per-channel) and int4 (grouped) Triton GEMMs vs torch "
        "fp16 x @ w.T at decode shapes",
        "protocol": "triton.testing.do_bench (CUDA events, L2 flushed), median; fp16 x; "
        "errors vs the fp32 matmul of each dequantized weight",
        "shapes": [{"M": m, "K": args.size, "N": args.size} for m in args.rows],
        "int4_group": args.group,
        "weight_bytes": weight_bytes(args.size, args.size, args.group),
    }
    if torch.cuda.is_available():
        result |= bench_gpu(args.rows, args.size, args.group)
    else:
        result["status"] = "not run: no GPU"
        result["cpu_interpreter_check"] = interpreter_check()
        print(f"no GPU; interpreter check: {result['cpu_interpreter_check']['status']}")
    write_results(args.out, result, started)


if __name__ == "__main__":
    main()
