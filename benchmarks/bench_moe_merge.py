"""Expert merging of the zoo's MoE byte LM (``moe-pydoc``): Sub-MoE against its baselines.

The source is taken from the zoo by name (``load_zoo_model("moe-pydoc")``: 4 MoE layers
of 8 experts, top-2), so a re-shipped model is benchmarked as shipped. It is compressed
to 6 and 4 experts per layer (25% and 50% of the experts removed; totals = per layer x
layers) by every method of :func:`nas.compress._experts.merge_experts` (``sub-moe``,
``hc-smoe``, ``freq-avg``, ``prune``, ``naee``, ``random``), with both per-layer
allocations (``uniform``, the default, and ``redundancy``), over ``--seeds`` seeds. The seed
draws the calibration windows (32 random train windows of 64 bytes, what ``nas compress
merge-experts`` uses) and K-means' and the random grouping's seed. Also Sub-MoE and
``freq-avg`` with every merged matrix at rank ``--rank`` (half of the full rank 64).

Figures per model, all on the same held-out bytes: next-byte cross-entropy (nats per
byte) and top-1 next-byte accuracy on the whole pydoc validation split at 256 bytes a
window (74 windows, 18,944 predicted bytes); parameters; tokens per second of one
forward at batch 8 x 256 on one thread (thread CPU time, median of repeats). Merging
keeps top-2 routing, so FLOPs per token do not change: throughput should not either.

The summary gives, per (experts, method, allocation), the median and per-seed losses;
whether Sub-MoE is below ``random`` and below ``prune`` in every seed; accuracy
retention (after / before) at 25% and 50% removed beside the Sub-MoE paper's figures
(Li et al. 2025, arXiv 2506.23266: 96% and 86% of Mixtral-8x7B's zero-shot score; theirs
is zero-shot *task* accuracy of a 47B-parameter model, ours next-byte accuracy of a
0.7M-parameter byte LM) and HC-SMoE's retention in the same run. Writes
``benchmarks/results/moe_merge.json`` (``--quick``: a smoke run of seconds, not written).

    OMP_NUM_THREADS=1 python benchmarks/bench_moe_merge.py [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _results import write_results

from nas.compress._experts import list_merge_methods, merge_experts
from nas.compress._lm_jobs import count_params, heldout_loss, train_windows
from nas.hardware._profile import measure_latency
from nas.supernets.tasks._lm import PydocLMTask
from nas.supernets.training._models import load_zoo_model, model_recipe
from nas.supernets.training._zoo import zoo_dir

RESULTS = Path(__file__).parent / "results" / "moe_merge.json"
MODEL = "moe-pydoc"
LENGTH = 256
"""Bytes per held-out window and per timed sequence (the model's context)."""
CALIBRATION_WINDOWS, CALIBRATION_LENGTH = 32, 64
"""The calibration draw of ``nas compress merge-experts`` (2,048 tokens)."""
TIMED_BATCH = 8
ALLOCATIONS = ("uniform", "redundancy")
PAPER_RETENTION = {"25%": 0.96, "50%": 0.86}
"""Sub-MoE on Mixtral-8x7B: share of the source's mean zero-shot accuracy kept with 25%
and 50% of the experts removed (Li et al. 2025, abstract)."""


def tokens_per_s(model: torch.nn.Module, batch: torch.Tensor, *, repeats: int) -> float:
    """Tokens per second of ``model(batch)``: one thread, thread CPU time, the median of
    rounds of ``repeats`` runs (at most three rounds, until its 95% interval is within 3%)."""
    with torch.inference_mode():
        measured = measure_latency(lambda: model(batch), threads=1, warmup=2,
                                   min_repeats=repeats, max_repeats=3 * repeats, rel_ci=0.03,
                                   clock=time.thread_time)
    return batch.numel() / (measured.median_ms / 1e3)


def shipped_recipe() -> dict[str, Any]:
    """How the benchmarked export was trained (its recorded recipe, warm start included)."""
    meta = json.loads((zoo_dir() / model_recipe(MODEL).stem / "config.json").read_text())
    recipe = meta["metadata"]["recipe"]
    keep = ("steps", "batch_size", "lr", "seed", "extra_loss", "warm_start")
    return {k: recipe[k] for k in keep if k in recipe} | {"command": meta["metadata"]["command"]}


def score(model: torch.nn.Module, windows: int) -> dict[str, float]:
    return heldout_loss(model, LENGTH, windows=windows)


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarise(runs: list[dict], source: dict, seeds: list[int], per_layer: list[int],
              layers: int) -> dict[str, Any]:
    """Medians, per-seed wins, retention and the rank comparison from ``runs``."""

    def rows(experts: int, method: str, allocation: str, rank: int | None) -> list[dict]:
        found = [r for r in runs if (r["experts_per_layer_target"], r["method"],
                                     r["allocation"], r["rank"]) == (experts, method,
                                                                     allocation, rank)]
        return sorted(found, key=lambda r: r["seed"])

    table: dict[str, Any] = {}
    wins: dict[str, Any] = {}
    allocation_check: dict[str, Any] = {}
    retention: dict[str, Any] = {}
    rank_check: dict[str, Any] = {}
    for experts in per_layer:
        removed = f"{round(100 * (1 - experts / source['experts_per_layer']))}%"
        for allocation in ALLOCATIONS:
            for method in sorted({r["method"] for r in runs if r["rank"] is None}):
                got = rows(experts, method, allocation, None)
                if not got:
                    continue
                table[f"{experts}/{method}/{allocation}"] = {
                    "experts_per_layer": experts, "experts_total": experts * layers,
                    "method": method, "allocation": allocation,
                    "loss_median": median([r["loss"] for r in got]),
                    "loss_per_seed": [r["loss"] for r in got],
                    "accuracy_median": median([r["accuracy"] for r in got]),
                    "accuracy_retention_median": median(
                        [r["accuracy"] / source["accuracy"] for r in got]),
                    "params": got[0]["params"],
                    "tokens_per_s_median": median([r["tokens_per_s"] for r in got]),
                }
            sub = {r["seed"]: r["loss"] for r in rows(experts, "sub-moe", allocation, None)}
            entry: dict[str, Any] = {"seeds": sorted(sub)}
            for rival in ("random", "prune", "hc-smoe", "freq-avg", "naee"):
                other = {r["seed"]: r["loss"] for r in rows(experts, rival, allocation, None)}
                if other and sub:
                    below = [sub[s] < other[s] for s in sorted(sub) if s in other]
                    entry[f"below_{rival}_per_seed"] = below
                    entry[f"below_{rival}_every_seed"] = all(below)
            wins[f"{experts}/{allocation}"] = entry
            retention.setdefault(removed, {})[allocation] = {
                method: table[f"{experts}/{method}/{allocation}"]["accuracy_retention_median"]
                for method in ("sub-moe", "hc-smoe", "freq-avg", "prune", "naee", "random")
                if f"{experts}/{method}/{allocation}" in table}
            for rank in sorted({r["rank"] for r in runs if r["rank"] is not None}):
                sub_r = {r["seed"]: r for r in rows(experts, "sub-moe", allocation, rank)}
                avg_r = {r["seed"]: r for r in rows(experts, "freq-avg", allocation, rank)}
                if not sub_r or not avg_r:
                    continue
                rank_check[f"{experts}/{allocation}/rank{rank}"] = {
                    "label": (f"every merged expert's matrices at rank {rank}: Sub-MoE keeps "
                              f"the group's shared top-{rank} subspace of the average; "
                              f"freq-avg the average's own truncated SVD"),
                    "params": sub_r[min(sub_r)]["params"],
                    "sub_moe_loss_median": median([r["loss"] for r in sub_r.values()]),
                    "freq_avg_loss_median": median([r["loss"] for r in avg_r.values()]),
                    "sub_moe_loss_per_seed": [sub_r[s]["loss"] for s in sorted(sub_r)],
                    "freq_avg_loss_per_seed": [avg_r[s]["loss"] for s in sorted(avg_r)],
                    "sub_moe_below_per_seed": [sub_r[s]["loss"] < avg_r[s]["loss"]
                                               for s in sorted(sub_r) if s in avg_r],
                }
        for method in sorted({r["method"] for r in runs if r["rank"] is None}):
            uni = {r["seed"]: r["loss"] for r in rows(experts, method, "uniform", None)}
            red = {r["seed"]: r["loss"] for r in rows(experts, method, "redundancy", None)}
            if uni and red:
                allocation_check[f"{experts}/{method}"] = {
                    "uniform_loss_median": median(list(uni.values())),
                    "redundancy_loss_median": median(list(red.values())),
                    "redundancy_below_per_seed": [red[s] < uni[s] for s in sorted(red)
                                                  if s in uni],
                }
    retention["paper_sub_moe"] = {
        "figures": PAPER_RETENTION,
        "label": ("Sub-MoE paper: share of Mixtral-8x7B's mean zero-shot task accuracy "
                  "kept; ours above: next-byte accuracy after / before, median over seeds, "
                  "on a 0.7M-parameter byte LM (not comparable in kind; shown side by side)"),
    }
    return {"table": table, "sub_moe_wins": wins, "allocation": allocation_check,
            "accuracy_retention": retention, "rank": rank_check,
            "seeds": seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--experts", type=int, nargs="+", default=[6, 4],
                        help="experts per layer after merging")
    parser.add_argument("--rank", type=int, default=32,
                        help="rank of the Sub-MoE vs freq-avg low-rank rows (0: none)")
    parser.add_argument("--repeats", type=int, default=6, help="timed forwards per round")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 6 experts, 8 windows; nothing written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    seeds = list(range(1 if args.quick else args.seeds))
    per_layer = [6] if args.quick else args.experts
    methods = ["sub-moe", "random", "prune"] if args.quick else list_merge_methods()
    all_windows = len(PydocLMTask(context=LENGTH).windows("validation")[0])
    windows = 8 if args.quick else all_windows
    repeats = 6 if args.quick else args.repeats

    source_model = load_zoo_model(MODEL).eval()
    layers = len(source_model.experts_per_layer)
    timed = PydocLMTask(context=LENGTH).windows("validation", limit=TIMED_BATCH)[0]  # (8, 256)
    tokens_per_s(source_model, timed, repeats=repeats)  # untimed: first-call effects
    source = {"experts_per_layer": max(source_model.experts_per_layer),
              "experts_total": sum(source_model.experts_per_layer),
              "params": count_params(source_model), **score(source_model, windows),
              "tokens_per_s": tokens_per_s(source_model, timed, repeats=repeats)}
    print("source", json.dumps(source), flush=True)

    plan = [(e, m, a, None) for e, m, a in itertools.product(per_layer, methods, ALLOCATIONS)]
    if args.rank:
        plan += [(e, m, a, args.rank) for e, m, a in itertools.product(
            per_layer, ("sub-moe", "freq-avg"), ALLOCATIONS[:1] if args.quick else ALLOCATIONS)]
    runs = []
    for seed in seeds:
        calibration = train_windows(CALIBRATION_WINDOWS, CALIBRATION_LENGTH,
                                    seed=seed)[:, :-1]  # (32, 64)
        for experts, method, allocation, rank in plan:
            t0 = time.perf_counter()
            merged = merge_experts(source_model, calibration, experts=experts * layers,
                                   method=method, rank=rank, seed=seed,
                                   allocation=allocation).eval()
            merge_s = time.perf_counter() - t0
            row = {"experts_per_layer_target": experts, "method": method,
                   "allocation": allocation, "rank": rank, "seed": seed,
                   "experts_per_layer": list(merged.experts_per_layer),
                   "params": count_params(merged), **score(merged, windows),
                   "tokens_per_s": tokens_per_s(merged, timed, repeats=repeats),
                   "merge_s": merge_s}
            runs.append(row)
            print(json.dumps(row), flush=True)
    source["tokens_per_s_end"] = tokens_per_s(source_model, timed, repeats=repeats)
    result = {
        "model": f"{MODEL} (zoo, as loaded by load_zoo_model)",
        "model_recipe": shipped_recipe(),
        "method": "Sub-MoE (Li et al. 2025, arXiv 2506.23266) and baselines, "
                  "compress/_experts.py",
        "eval": {"split": "validation", "windows": windows, "length": LENGTH,
                 "bytes": windows * LENGTH, "unit": "nats per byte; next-byte accuracy",
                 "note": f"the whole validation split ({all_windows} windows of {LENGTH} "
                         f"bytes), the same windows for every row"},
        "calibration": {"windows": CALIBRATION_WINDOWS, "length": CALIBRATION_LENGTH,
                        "split": "train", "seeded_by": "seed"},
        "timing": {"batch": TIMED_BATCH, "length": LENGTH, "threads": 1,
                   "figure": "tokens/s from the median thread CPU time of one forward",
                   "note": "top-2 routing is kept, so FLOPs per token do not change"},
        "source": source,
        "runs": runs,
        "summary": summarise(runs, source, seeds, per_layer, layers),
    }
    if args.quick:
        print(json.dumps(result["summary"]["sub_moe_wins"]))
        print("quick run: nothing written")
        return
    write_results(RESULTS, result, started)


if __name__ == "__main__":
    main()
