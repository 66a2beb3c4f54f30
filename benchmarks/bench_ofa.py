"""OFA on digits: forward time through the supernet vs extracted, and PS vs training alone.

For the smallest, a middle (kernel 5, expand 4, depth 3, resolution 16) and the largest
subnet of the shipped ``ofa`` checkpoint:

- forward time of one batch (batch 1 and batch 256) through the supernet with the subnet
  activated (weight slicing and kernel transformation on every pass) vs through the
  extracted dense model, median of ``--repeats`` interleaved runs, same thread count;
- validation and test accuracy of the extracted subnet (BN recalibrated, as the search
  and the export use it) after progressive shrinking, vs the same architecture trained
  alone from scratch for the same number of steps (the recipe's steps, batch size, peak
  learning rate, warm-up, cosine schedule and AdamW settings).

Writes ``benchmarks/results/ofa.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_ofa.py [--repeats 30] [--threads 1]
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
from nas.supernets import ZOO_RECIPES, read_checkpoint_meta, zoo_dir
from nas.supernets.ofa._dense import OFASubnet, set_running_statistics
from nas.supernets.training._loop import _lr_lambda

RESULTS = Path(__file__).parent / "results" / "ofa.json"


def middle(space: nas.SearchSpace) -> nas.Config:
    values = {}
    for gene in space.genes:
        field = gene.name.rsplit(".", 1)[-1]
        values[gene.name] = {"resolution": 16, "depth": 3, "kernel": 5, "expand": 4}[field]
    return space.config(values)


def train_alone(subnet_config: dict, task: nas.Task, recipe, meta: dict) -> OFASubnet:
    """The architecture trained from scratch with the supernet recipe's settings."""
    torch.manual_seed(recipe.seed)
    model = OFASubnet(**subnet_config)
    r = meta["recipe"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=(0.9, 0.98),
                                  weight_decay=r["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(r["schedule"], warmup=r["warmup"], steps=r["steps"]))
    next_batch = task.train_batches(batch_size=r["batch_size"],
                                    generator=torch.Generator().manual_seed(recipe.seed))
    model.train()
    for _ in range(r["steps"]):
        optimizer.zero_grad(set_to_none=True)
        task.loss(model, next_batch()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["clip_norm"])
        optimizer.step()
        scheduler.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    supernet = nas.get_supernet("ofa")
    task = nas.get_task(supernet.task_name)
    recipe = ZOO_RECIPES["ofa"]
    meta = read_checkpoint_meta(zoo_dir() / recipe.stem)
    space = supernet.space
    configs = {"smallest": space.smallest(), "middle": middle(space),
               "largest": space.largest()}
    inputs = task.split("validation")[0]

    rows = []
    for label, config in configs.items():
        dense = supernet.extract(config)
        supernet.activate(config)
        row: dict = {"subnet": label, "config": config.to_dict(),
                     "params": sum(p.numel() for p in dense.parameters())}
        for batch in (1, 256):
            x = inputs[:batch]
            with torch.inference_mode():
                t_sliced, t_dense = interleaved_medians(lambda x=x: supernet(x),
                                              lambda x=x, d=dense: d(x), args.repeats)
            row[f"batch{batch}"] = {"supernet_ms": 1e3 * t_sliced, "dense_ms": 1e3 * t_dense,
                                    "ratio_supernet_over_dense": t_sliced / t_dense}
        started = time.perf_counter()
        alone = train_alone(dense.subnet_config(), task, recipe, meta)
        set_running_statistics(alone, supernet.calibration)  # same BN treatment as PS
        train_s = time.perf_counter() - started
        for split in ("validation", "test"):
            row[f"ps_{split}_accuracy"] = task.evaluate(dense, split=split)["accuracy"]
            row[f"alone_{split}_accuracy"] = task.evaluate(alone, split=split)["accuracy"]
        row["alone_train_s"] = round(train_s, 1)
        rows.append(row)
        print(f"{label:8s} batch1 supernet {row['batch1']['supernet_ms']:.2f} ms dense "
              f"{row['batch1']['dense_ms']:.2f} ms | batch256 supernet "
              f"{row['batch256']['supernet_ms']:.1f} ms dense {row['batch256']['dense_ms']:.1f}"
              f" ms | test acc PS {row['ps_test_accuracy']:.3f} alone "
              f"{row['alone_test_accuracy']:.3f}")

    document = {
        "benchmark": "OFA digits: supernet-activated vs extracted forward time; accuracy of "
                     "extracted subnets after progressive shrinking vs trained alone",
        "checkpoint": f"supernets/zoo/{recipe.stem}",
        "checkpoint_sha256": supernet.checkpoint_hash,
        "steps": meta["recipe"]["steps"],
        "batch_size": meta["recipe"]["batch_size"],
        "supernet_train_s": meta["recipe"]["wall_s"],
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
