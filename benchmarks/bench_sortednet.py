"""SortedNet on the digits: slicing vs dense speed, and sorted vs conventional training.

One run, one process, one thread count, the shipped recipe (``nas train --supernet
sortednet``: steps, batch, learning rate, warm-up, weight decay) for every training:

1. speed: batch-1 forward and one validation pass of the smallest, a middle and the
   largest sub-model, through the activated supernet (weight slicing) and through the
   extracted dense model;
2. accuracy: those three sub-models extracted from the SortedNet-trained supernet versus
   the same architectures trained alone for the same number of optimiser steps;
3. the SortedNet property: held-out (test split) loss and accuracy of every width at
   full depth, and of every (width, depth) sub-model, for the SortedNet supernet versus
   the same prefixes (first units, first layers) of the largest model trained
   conventionally, over ``--seeds`` seeds.

Writes ``benchmarks/results/sortednet.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_sortednet.py [--seeds 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _timing import median_seconds

import nas
from nas.supernets import train_supernet
from nas.supernets.sortednet import NAME, LargestOnly, SortedMLP
from nas.supernets.training._zoo import zoo_recipe

RESULTS = Path(__file__).parent / "results" / "sortednet.json"
HELD_OUT = "test"
LOSS_TOLERANCE = 0.01
"""Nats by which a wider sub-model's held-out loss may exceed a narrower one's."""


def train(net: SortedMLP, task: nas.Task, scheme, seed: int) -> tuple[SortedMLP, float]:
    """``net`` trained with the zoo recipe's settings and ``scheme``; wall seconds."""
    recipe = zoo_recipe(NAME)
    torch.manual_seed(seed)  # the same initialisation for every scheme of one seed
    start = time.perf_counter()
    train_supernet(net, task, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr,
                   seed=seed, warmup=recipe.warmup, weight_decay=recipe.weight_decay,
                   scheme=scheme, progress=False)
    return net, time.perf_counter() - start


def fresh(arch: dict, seed: int) -> SortedMLP:
    torch.manual_seed(seed)
    return SortedMLP.from_architecture(arch)


def scores(net: SortedMLP, task: nas.Task, config: dict) -> dict[str, float]:
    return task.evaluate(net.extract(config), split=HELD_OUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = zoo_recipe(NAME)
    task = nas.get_task(recipe.task)
    arch = recipe.build(task).architecture()
    space = SortedMLP.from_architecture(arch).space
    widths, depths = space.gene("width").choices, space.gene("depth").choices

    per_seed = []
    for seed in range(args.seeds):
        sorted_net, sorted_s = train(fresh(arch, seed), task, recipe.scheme(), seed)
        conventional, conventional_s = train(fresh(arch, seed), task, LargestOnly(), seed)
        grid = {}
        for depth in depths:
            for width in widths:
                config = {"width": width, "depth": depth}
                grid[f"w{width}-d{depth}"] = {
                    "width": width, "depth": depth,
                    "sortednet": scores(sorted_net, task, config),
                    "conventional_slice": scores(conventional, task, config),
                }
        per_seed.append({"seed": seed, "train_s": {"sortednet": round(sorted_s, 1),
                                                  "conventional": round(conventional_s, 1)},
                         "grid": grid, "net": sorted_net})
        print(f"seed {seed}: trained SortedNet in {sorted_s:.1f}s, conventional in "
              f"{conventional_s:.1f}s")

    full_depth = max(depths)
    by_width = []
    for width in widths:
        key = f"w{width}-d{full_depth}"
        ours = [s["grid"][key]["sortednet"] for s in per_seed]
        theirs = [s["grid"][key]["conventional_slice"] for s in per_seed]
        by_width.append({
            "width": width,
            "units": int(width * arch["hidden_dim"]),
            "sortednet_loss": statistics.mean(m["loss"] for m in ours),
            "conventional_loss": statistics.mean(m["loss"] for m in theirs),
            "sortednet_accuracy": statistics.mean(m["accuracy"] for m in ours),
            "conventional_accuracy": statistics.mean(m["accuracy"] for m in theirs),
        })
        row = by_width[-1]
        print(f"width {width:5.3f}: loss SortedNet {row['sortednet_loss']:.3f} vs "
              f"conventional slice {row['conventional_loss']:.3f}; accuracy "
              f"{row['sortednet_accuracy']:.3f} vs {row['conventional_accuracy']:.3f}")
    losses = [row["sortednet_loss"] for row in by_width]
    rises = [b - a for a, b in zip(losses, losses[1:], strict=False)]
    beats = {key: sum(s["grid"][key]["sortednet"]["loss"] < s["grid"][key]["conventional_slice"]
                      ["loss"] for s in per_seed)
             for key in per_seed[0]["grid"]}

    # Speed and accuracy of three sub-models of the seed-0 SortedNet supernet.
    supernet = per_seed[0]["net"].eval()
    configs = {"smallest": space.smallest().to_dict(),
               "middle": {"width": 0.5, "depth": 2},
               "largest": space.largest().to_dict()}
    inputs, _ = task.split("validation")
    one = inputs[:1]
    rows = []
    for label, config in configs.items():
        dense = supernet.extract(config)

        def sliced_forward(config=config) -> None:
            supernet.activate(config)
            with torch.inference_mode():
                for _ in range(200):
                    supernet(one)

        def dense_forward(dense=dense) -> None:
            with torch.inference_mode():
                for _ in range(200):
                    dense(one)

        def sliced_pass(config=config) -> None:
            supernet.activate(config)
            task.evaluate(supernet)

        t_sliced = median_seconds(sliced_forward, args.repeats) / 200
        t_dense = median_seconds(dense_forward, args.repeats) / 200
        t_sliced_pass = median_seconds(sliced_pass, args.repeats)
        t_dense_pass = median_seconds(lambda dense=dense: task.evaluate(dense), args.repeats)
        alone_arch = arch | {"hidden_dim": int(config["width"] * arch["hidden_dim"]),
                             "max_depth": config["depth"], "widths": [1.0]}
        alone, alone_s = train(fresh(alone_arch, 0), task, LargestOnly(), 0)
        row = {
            "config": label, **config,
            "params": sum(p.numel() for p in dense.parameters()),
            "batch1_forward_us": {"sliced": t_sliced * 1e6, "dense": t_dense * 1e6,
                                  "ratio_sliced_over_dense": t_sliced / t_dense},
            "validation_pass_ms": {"sliced": t_sliced_pass * 1e3, "dense": t_dense_pass * 1e3,
                                   "ratio_sliced_over_dense": t_sliced_pass / t_dense_pass},
            "held_out": {"extracted_from_sortednet": task.evaluate(dense, split=HELD_OUT),
                         "trained_alone": scores(alone, task, alone.space.largest()),
                         "trained_alone_s": round(alone_s, 1)},
        }
        rows.append(row)
        print(f"{label:8s} forward sliced {t_sliced * 1e6:.1f}us dense {t_dense * 1e6:.1f}us; "
              f"accuracy extracted {row['held_out']['extracted_from_sortednet']['accuracy']:.3f}"
              f" alone {row['held_out']['trained_alone']['accuracy']:.3f}")

    document = {
        "benchmark": "SortedNet sorted MLP on digits: slicing vs dense, sorted vs conventional",
        "held_out_split": HELD_OUT,
        "recipe": {"steps": recipe.steps, "batch_size": recipe.batch_size, "lr": recipe.lr,
                   "warmup": recipe.warmup, "weight_decay": recipe.weight_decay,
                   "scheme": recipe.scheme().describe(), "architecture": arch},
        "seeds": args.seeds,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "loss_by_width_full_depth": by_width,
        "property": {
            "loss_tolerance": LOSS_TOLERANCE,
            "largest_rise_between_neighbour_widths": max(rises),
            "loss_non_increasing_with_width": max(rises) <= LOSS_TOLERANCE,
            "seeds_where_sortednet_slice_beats_conventional_slice": beats,
        },
        "subnets": rows,
        "grid_per_seed": [{k: v for k, v in s.items() if k != "net"} for s in per_seed],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"largest loss rise between neighbour widths {max(rises):+.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
