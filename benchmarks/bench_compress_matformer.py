"""Compressing our own model: the shipped MatFormer's largest subnet (XL, 0.87 M parameters,
a 4-layer pre-LN byte LM on pydoc text), by NViT pruning and by weight subcloning.

Every figure is next-byte cross-entropy (nats per byte) and accuracy on the *whole*
pydoc-lm validation split, over ``--seeds`` seeds (batches, probes, initialisations).

1. **Pruning to the size of MatFormer's best small Mix'n'Match subnet.** The supernet
   was trained to serve small subnets (its nested FFNs), so the baseline to beat is its
   own best subnet at that size: every Mix'n'Match model under half the XL's parameters
   is scored and the best one sets the budget. The XL is then pruned to that parameter
   count by Hessian-aware saliency and by magnitude, each in 4 steps with 30 distillation
   steps (task loss + soft targets of the XL) after each; also one shot without any
   distillation. Same data, same steps.
2. **Pruning to half the modelled latency** on this CPU (a latency model calibrated on 32
   shapes of the XL, 64 tokens): the pruned model's predicted and measured latency; and,
   one shot, the loss at that latency for several weights ``eta`` of NViT's
   latency-aware term (score minus ``eta`` times the ms a unit saves).
3. **Subcloning** to 2 layers x 64 dims (about a quarter of the parameters) three ways:
   activation ranking (the paper), random neurons, random initialisation; each trained
   for ``--train-steps`` AdamW steps on the task loss; step-0 and final validation loss,
   and the step at which each reaches the random initialisation's final training loss.

Writes ``benchmarks/results/compress_matformer.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_compress_matformer.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_results

from nas import get_supernet
from nas.compress._convert import to_transformer
from nas.compress._cost import PARAMS, latency_cost
from nas.compress._latency import calibrate, measure_ms
from nas.compress._prune import count_params, prune
from nas.compress._subclone import subclone
from nas.compress._task_data import TaskData
from nas.compress._train import train
from nas.compress._transformer import DenseTransformer
from nas.supernets.tasks._lm import PydocLMTask

RESULTS = Path(__file__).parent / "results" / "compress_matformer.json"
TOKENS = 64
ETAS = (0.0, 0.1, 0.3, 1.0)
"""Weights of NViT's latency-aware term tried (scores are L2-normalised per layer, savings
in ms)."""


def scores(task: PydocLMTask, model: torch.nn.Module) -> dict[str, float]:
    metrics = task.evaluate(model)
    return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}


def best_small_mix_n_match(supernet, task: PydocLMTask, limit: int) -> dict:
    """The Mix'n'Match subnet with the lowest validation loss among those of at most
    ``limit`` parameters (the space is small enough to enumerate)."""
    genes = supernet.space.genes
    best = None
    for choice in itertools.product(*(g.choices for g in genes)):
        config = dict(zip((g.name for g in genes), choice))
        model = supernet.extract(config).eval()
        params = count_params(model)
        if params > limit:
            continue
        row = {"config": config, "params": params, **scores(task, model)}
        if best is None or row["loss"] < best["loss"]:
            best = row
    return best


def prune_runs(xl: DenseTransformer, data: TaskData, task: PydocLMTask, fraction: float,
               seeds: list[int]) -> dict:
    out: dict = {}
    for criterion in ("hessian", "magnitude"):
        rows = []
        for seed in seeds:
            common = dict(target=fraction, cost=PARAMS, criterion=criterion,
                          saliency_loss=task.loss, saliency_batches=64,
                          saliency_data=data.batches(4, torch.Generator().manual_seed(seed + 1)),
                          progress=False)
            one_shot = prune(xl, data.batches(16, torch.Generator().manual_seed(seed)),
                             steps=1, **common)
            started = time.perf_counter()
            pruned = prune(xl, data.batches(16, torch.Generator().manual_seed(seed)),
                           steps=4, distil_loss=data.distil_loss, distil_steps=30, lr=1e-3,
                           **common)
            rows.append({"seed": seed, "params": count_params(pruned),
                         "one_shot": scores(task, one_shot), "distilled": scores(task, pruned),
                         "shape": {"embed_dim": pruned.embed_dim,
                                   "ffn": [s["ffn_dim"] for s in pruned.subnet_config()["layers"]],
                                   "heads": [s["heads"] for s in pruned.subnet_config()["layers"]]},
                         "seconds": time.perf_counter() - started})
            print(criterion, json.dumps(rows[-1]))
        out[criterion] = {"runs": rows, **{
            f"{stage}_{metric}_mean": statistics.mean(r[stage][metric] for r in rows)
            for stage in ("one_shot", "distilled") for metric in ("loss", "accuracy")}}
    return out


def latency_run(xl: DenseTransformer, data: TaskData, task: PydocLMTask) -> dict:
    calibration = calibrate(xl, tokens=TOKENS, samples=32, progress=False)
    cost = latency_cost(calibration.model)
    common = dict(target=0.5, cost=cost, saliency_loss=task.loss, saliency_batches=64,
                  progress=False)

    def batches(seed: int) -> dict:
        return {"data": data.batches(16, torch.Generator().manual_seed(seed)),
                "saliency_data": data.batches(4, torch.Generator().manual_seed(seed + 1))}

    pruned = prune(xl, **batches(0), steps=4, distil_loss=data.distil_loss, distil_steps=30,
                   lr=1e-3, **common)
    eta = {str(e): {**scores(task, one_shot), "predicted_ms": cost(one_shot),
                    "params": count_params(one_shot)}
           for e in ETAS
           for one_shot in [prune(xl, **batches(0), steps=1, latency=cost, eta=e, **common)]}
    return {"heldout": calibration.heldout, "coefficients": calibration.model.to_dict(),
            "source_predicted_ms": cost(xl), "source_measured_ms": measure_ms(xl, tokens=TOKENS),
            "target_ms": 0.5 * cost(xl), "pruned_predicted_ms": cost(pruned),
            "pruned_measured_ms": measure_ms(pruned, tokens=TOKENS),
            "pruned_params": count_params(pruned), **scores(task, pruned),
            "one_shot_by_eta": eta}


def steps_to_reach(history: list[float], final: float, window: int = 10) -> int | None:
    means = np.convolve(history, np.ones(window) / window, mode="valid")
    hits = np.flatnonzero(means <= final)
    return int(hits[0]) + window if hits.size else None


def subclone_runs(xl: DenseTransformer, data: TaskData, task: PydocLMTask, seeds: list[int],
                  train_steps: int) -> dict:
    calibration = data.calibration(128)
    rows = []
    for seed in seeds:
        models = {"subclone": subclone(xl, calibration, layers=2, hidden=64),
                  "random_neurons": subclone(xl, calibration, layers=2, hidden=64,
                                             ranking="random", seed=seed)}
        torch.manual_seed(seed)
        models["random_init"] = DenseTransformer(**models["subclone"].subnet_config())
        row: dict = {"seed": seed, "params": count_params(models["subclone"])}
        histories = {}
        for name, model in models.items():
            before = scores(task, model)
            histories[name] = train(model, task.loss,
                                    data.batches(16, torch.Generator().manual_seed(seed)),
                                    steps=train_steps, lr=1e-3)
            row[name] = {"step0": before, "final": scores(task, model)}
        final = float(np.mean(histories["random_init"][-10:]))
        for name, history in histories.items():
            row[name]["steps_to_random_init_final"] = steps_to_reach(history, final)
        rows.append(row)
        print("subclone", json.dumps(row))
    return {"target": {"layers": 2, "hidden": 64}, "train_steps": train_steps, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    supernet = get_supernet("matformer")
    task = PydocLMTask(TOKENS)
    xl = to_transformer(supernet.extract(supernet.space.largest())).eval()
    data = TaskData(task, xl, language_model=True)
    xl_params = count_params(xl)
    baseline = best_small_mix_n_match(supernet, task, xl_params // 2)
    print("mix'n'match", json.dumps(baseline))
    result = {
        "model": "matformer XL (shipped checkpoint) as DenseTransformer",
        "task": task.name,
        "xl": {"params": xl_params, **scores(task, xl)},
        "mix_n_match_best_under_half": baseline,
        "prune_to_mix_n_match_size": prune_runs(xl, data, task, baseline["params"] / xl_params,
                                                seeds),
        "prune_to_half_latency": latency_run(xl, data, task),
        "subclone_2x64": subclone_runs(xl, data, task, seeds, args.train_steps),
    }
    write_results(RESULTS, result, started)


if __name__ == "__main__":
    main()
