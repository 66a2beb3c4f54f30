"""MatFormer on pydoc-lm: slicing vs dense speed, joint training vs training alone,
nested granularities vs slices of an XL-only model, and Mix'n'Match.

In one run, with the shipped (jointly trained) checkpoint:

1. forward time of one latency probe (batch 1, one 64-byte window) for the smallest,
   a middle and the largest subnet, through the activated supernet and through the
   extracted dense model;
2. held-out metrics of those three subnets extracted from the supernet versus the same
   architectures each trained alone with the zoo recipe (same steps, batches, seed,
   learning-rate schedule); the largest trained alone is the XL-only baseline;
3. the held-out loss of the uniform granularities S/M/L/XL of the joint model versus the
   same slices (first k FFN units) of the XL-only model;
4. Mix'n'Match models (a granularity per layer): parameters, loss and accuracy, and
   whether each lands between its neighbouring uniform granularities.

Writes ``benchmarks/results/matformer.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_matformer.py [--repeats 200] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from _timing import interleaved_medians

import nas
from nas.supernets import read_checkpoint_meta, train_supernet, zoo_dir
from nas.supernets.matformer import GRANULARITIES, MatFormerSupernet
from nas.supernets.training._schemes import FixedSubnet
from nas.supernets.training._zoo import zoo_recipe

RESULTS = Path(__file__).parent / "results" / "matformer.json"
MIXES = (
    ("S", "S", "M", "M"), ("M", "M", "S", "S"),
    ("M", "M", "L", "L"), ("L", "L", "M", "M"), ("M", "L", "M", "L"),
    ("L", "L", "XL", "XL"), ("XL", "XL", "L", "L"),
)


def params_of(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the trained-alone models (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    supernet = nas.get_supernet("matformer")
    task = nas.get_task(supernet.task_name)
    recipe = zoo_recipe("matformer")
    meta = read_checkpoint_meta(zoo_dir() / recipe.stem)
    steps = args.steps or meta["recipe"]["steps"]
    subnets = {"smallest": supernet.space.smallest(),
               "middle": supernet.mix(["M", "M", "L", "L"]),
               "largest": supernet.space.largest()}

    speed = []
    for label, config in subnets.items():
        dense = supernet.extract(config)
        supernet.activate(config)
        sliced_s, dense_s = interleaved_medians(task.latency_probe(supernet),
                                      task.latency_probe(dense), args.repeats, warmup=5)
        speed.append({"subnet": label, "config": config.to_dict(), "params": params_of(dense),
                      "sliced_ms": 1e3 * sliced_s, "dense_ms": 1e3 * dense_s,
                      "ratio_sliced_over_dense": sliced_s / dense_s})
        print(f"{label:8s} sliced {1e3 * sliced_s:.2f} ms  dense {1e3 * dense_s:.2f} ms")

    alone_nets, alone_wall = {}, {}
    for label, config in subnets.items():
        net = MatFormerSupernet.from_architecture(meta["architecture"])
        started = time.perf_counter()
        train_supernet(net, task, steps=steps, batch_size=recipe.batch_size, lr=recipe.lr,
                       seed=recipe.seed, warmup=recipe.warmup,
                       weight_decay=recipe.weight_decay, scheme=FixedSubnet(config),
                       progress=False, eval_limit=1)
        alone_wall[label] = time.perf_counter() - started
        alone_nets[label] = net
        print(f"trained {label} alone in {alone_wall[label]:.0f} s")

    accuracy = []
    for label, config in subnets.items():
        joint = task.evaluate(supernet.extract(config))
        alone_net = alone_nets[label]
        alone_net.activate(config)
        alone = task.evaluate(alone_net.extract(config))
        accuracy.append({"subnet": label, "joint": joint, "alone": alone,
                         "alone_train_s": round(alone_wall[label], 1)})
        print(f"{label:8s} accuracy joint {joint['accuracy']:.4f}  alone {alone['accuracy']:.4f}")

    xl_only = alone_nets["largest"]
    granularities = []
    for g in GRANULARITIES:
        config = supernet.uniform(g)
        supernet.activate(config)
        xl_only.activate(config)
        joint, sliced = task.evaluate(supernet), task.evaluate(xl_only)
        granularities.append({
            "granularity": g, "ffn_dim": int(config["layer.0.ffn_dim"]),
            "params": params_of(supernet.extract(config)),
            "joint_loss": joint["loss"], "xl_only_slice_loss": sliced["loss"],
            "joint_accuracy": joint["accuracy"], "xl_only_slice_accuracy": sliced["accuracy"],
            "joint_better": joint["loss"] < sliced["loss"]})
        print(f"{g:2s} joint loss {joint['loss']:.4f}  XL-only slice {sliced['loss']:.4f}")

    uniform = {row["granularity"]: row for row in granularities}
    mixes = []
    for mix in MIXES:
        config = supernet.mix(list(mix))
        supernet.activate(config)
        metrics = task.evaluate(supernet)
        params = params_of(supernet.extract(config))
        low, high = sorted(set(mix), key=list(GRANULARITIES).index)
        between = (uniform[high]["joint_loss"] < metrics["loss"] < uniform[low]["joint_loss"])
        mixes.append({"mix": "-".join(mix), "params": params, "loss": metrics["loss"],
                      "accuracy": metrics["accuracy"], "neighbours": [low, high],
                      "params_between": uniform[low]["params"] < params
                      < uniform[high]["params"],
                      "loss_between": between})
        print(f"{'-'.join(mix):12s} params {params}  loss {metrics['loss']:.4f}  "
              f"between {low}/{high}: {between}")

    document = {
        "benchmark": "MatFormer on pydoc-lm: slicing vs dense, joint vs alone, "
                     "granularities vs XL-only slices, Mix'n'Match",
        "checkpoint": f"{recipe.stem} (sha256 {supernet.checkpoint_hash[:12]})",
        "checkpoint_recipe": {k: meta["recipe"][k] for k in
                              ("steps", "batch_size", "lr", "warmup", "seed", "scheme",
                               "wall_s")},
        "alone_steps": steps,
        "eval": "whole validation split (next-byte, 64-byte windows)",
        "threads": 1,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "speed": speed,
        "accuracy": accuracy,
        "granularities": granularities,
        "mix_n_match": mixes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
