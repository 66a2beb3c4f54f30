"""FlexiBERT: weight slicing vs extracted dense models, and shared vs stand-alone training.

Two questions about the shipped ``flexibert`` supernet, for its smallest, a middle (the
median parameter count of 200 seeded random configs) and its largest subnet:

1. forward time of one batch-1 paragraph (64 tokens) through the activated supernet
   (weight slicing) vs through the extracted dense model, same process and threads, and
   the time of ``activate`` itself (paid once per subnet, not per forward);
2. cosine fidelity to MiniLM on the validation paragraphs of the extracted subnet (the
   supernet trained by the sandwich rule) vs the same architecture trained alone from
   scratch with the zoo recipe's steps, batch size, learning rate and schedule.

Writes ``benchmarks/results/flexibert.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_flexibert.py [--repeats 30] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _timing import median_seconds

import nas
from nas._space import Config
from nas.supernets.training._loop import read_checkpoint_meta, train_supernet
from nas.supernets.training._schemes import FixedSubnet
from nas.supernets.training._zoo import zoo_dir, zoo_recipe

RESULTS = Path(__file__).parent / "results" / "flexibert.json"


def pick_configs(supernet) -> dict[str, Config]:  # noqa: ANN001
    space = supernet.space
    rng = np.random.default_rng(0)
    sampled = [space.sample(rng) for _ in range(200)]
    sizes = [sum(p.numel() for p in supernet.extract(c).parameters()) for c in sampled]
    middle = sampled[int(np.argsort(sizes)[len(sizes) // 2])]
    return {"smallest": space.smallest(), "middle": middle, "largest": space.largest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=None,
                        help="stand-alone training steps (default: the zoo recipe's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    supernet = nas.get_supernet("flexibert")
    task = nas.get_task(supernet.task_name)
    recipe = zoo_recipe("flexibert")
    meta = read_checkpoint_meta(zoo_dir() / recipe.stem)
    steps = args.steps or meta["recipe"]["steps"]
    inputs = task.example_inputs()
    rows = []
    for label, config in pick_configs(supernet).items():
        dense = supernet.extract(config)
        supernet.activate(config)
        with torch.inference_mode():
            gap = float((supernet(*inputs) - dense(*inputs)).abs().max())

        def activate(config=config) -> None:
            supernet.activate(config)

        def sliced() -> None:
            with torch.inference_mode():
                supernet(*inputs)

        def extracted(dense=dense) -> None:
            with torch.inference_mode():
                dense(*inputs)

        shared = task.evaluate(dense)["accuracy"]
        torch.manual_seed(0)
        alone_net = recipe.build(task)
        started = time.perf_counter()
        train_supernet(alone_net, task, steps=steps, batch_size=meta["recipe"]["batch_size"],
                       lr=meta["recipe"]["lr"], seed=0, warmup=meta["recipe"]["warmup"],
                       progress=False, scheme=FixedSubnet(config), eval_limit=1)
        alone_s = time.perf_counter() - started
        alone = task.evaluate(alone_net.extract(config))["accuracy"]
        rows.append({
            "subnet": label,
            "config": config.to_dict(),
            "params": sum(p.numel() for p in dense.parameters()),
            "activate_ms": round(1e3 * median_seconds(activate, args.repeats, warmup=3), 3),
            "supernet_forward_ms": round(1e3 * median_seconds(sliced, args.repeats, warmup=3), 3),
            "dense_forward_ms": round(1e3 * median_seconds(extracted, args.repeats, warmup=3), 3),
            "max_abs_output_gap": gap,
            "cosine_supernet_trained": round(shared, 4),
            "cosine_trained_alone": round(alone, 4),
            "alone_train_s": round(alone_s, 1),
        })
        print(json.dumps(rows[-1]))
    document = {
        "benchmark": "flexibert",
        "supernet": "flexibert",
        "checkpoint_sha256": supernet.checkpoint_hash,
        "task": task.name,
        "metric": "mean cosine similarity to MiniLM's sentence embeddings, validation split",
        "input": "batch 1, one paragraph padded to 64 tokens",
        "supernet_training": {"steps": meta["recipe"]["steps"],
                              "batch_size": meta["recipe"]["batch_size"],
                              "scheme": meta["recipe"]["scheme"],
                              "subnets_per_step": 2 + meta["recipe"]["scheme"].get(
                                  "random_subnets", 0)},
        "alone_training": {"steps": steps, "batch_size": meta["recipe"]["batch_size"],
                           "lr": meta["recipe"]["lr"], "subnets_per_step": 1},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
