"""Training at scale on this machine: ranks, the gradient all-reduce, resuming.

For the HAT and OFA zoo supernets (their recipes' models, tasks and batch sizes), the
training loop runs ``STEPS`` timed steps (after ``WARMUP`` untimed ones) in each of
these, ``REPEATS`` times round robin (the median counts):

- ``1 rank x 1 thread, half batch``: what each of two ranks computes alone;
- ``1 rank x 1 thread`` and ``1 rank x 2 threads``: one process on the whole batch;
- ``2 ranks x 1 thread (DDP)``: ``torchrun`` with Gloo, DistributedDataParallel with
  ``find_unused_parameters`` (what ``nas train --nproc 2`` runs);
- ``2 ranks x 1 thread (flat all-reduce)``: the alternative to DDP, no wrapper and one
  all-reduce of every gradient, flattened, after the step's backward passes;
- ``2 ranks x 1 thread (no gradient all-reduce)``: the same two ranks computing alone
  (wrong weights, right timing): what the all-reduce is measured against.

The overhead of the all-reduce per step is the DDP step time less the no-all-reduce
one (the same computation, the same contention for the cores); ``allreduce_ms`` times a
bare Gloo all-reduce of the supernet's parameter count. On two cores, two ranks also
compete for memory bandwidth and caches: the half-batch one-rank time shows how fast
each would be alone. Resuming: the time to read the newest
state of a HAT run and the time to replay the batch keys of the steps already done,
per 1,000 steps, at 1,000 and 10,000 steps (the cost per step must not grow).

The GPU part (the same steps on a lent GPU) writes "not run: no GPU" without one.
Writes ``benchmarks/results/training_scale.json``.

Run: ``python benchmarks/bench_training_scale.py`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from _results import write_results

from nas import get_task
from nas.supernets.training._batches import StepBatches
from nas.supernets.training._distributed import TORCHRUN, Ranks
from nas.supernets.training._loop import Checkpointing, Execution, train_supernet
from nas.supernets.training._state import RunFolder
from nas.supernets.training._zoo import zoo_recipe

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "training_scale.json"
SUPERNETS = ("hat", "ofa")
WARMUP, STEPS, REPEATS = 3, 20, 3


class _LocalGradients(Ranks):
    """Ranks without DDP: gradients stay local (until :func:`_flat_all_reduce`, if
    installed)."""

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


def _flat_all_reduce(clip: Any, world: int) -> Any:
    """``clip_grad_norm_`` preceded by one all-reduce of every gradient (flattened):
    the step's only communication when DDP is not used."""

    def reduce_then_clip(parameters: Any, max_norm: float) -> torch.Tensor:
        parameters = list(parameters)
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return clip(parameters, max_norm)

    return reduce_then_clip


def worker(supernet: str, batch_size: int, sync: str, result: Path) -> None:
    """One rank of a timed training (launched by :func:`_timed`)."""
    recipe = zoo_recipe(supernet)
    task = get_task(recipe.task)
    torch.manual_seed(recipe.seed)
    net = recipe.build(task)
    ranks = Ranks.from_env()
    if sync != "ddp" and ranks.world > 1:
        ranks = _LocalGradients(ranks.world, ranks.rank, ranks.local)
    if sync == "flat" and ranks.world > 1:
        torch.nn.utils.clip_grad_norm_ = _flat_all_reduce(torch.nn.utils.clip_grad_norm_,
                                                          ranks.world)
    ranks = ranks.join("cpu")
    allreduce_ms = None
    if ranks.world > 1:
        flat = torch.zeros(sum(p.numel() for p in net.parameters()))
        dist.all_reduce(flat)
        started = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(flat)
        allreduce_ms = (time.perf_counter() - started) / 10 * 1e3
    stamps: list[float] = []
    train_supernet(
        net, task, steps=WARMUP + STEPS, batch_size=batch_size, lr=recipe.lr,
        seed=recipe.seed, random_subnets=recipe.random_subnets, warmup=recipe.warmup,
        scheme=recipe.scheme() if recipe.scheme is not None else None, progress=False,
        eval_limit=1, execution=Execution(ranks=ranks),
        on_step=lambda step, configs, loss: stamps.append(time.perf_counter()))
    if ranks.leader:
        seconds = (stamps[-1] - stamps[WARMUP - 1]) / STEPS
        result.write_text(json.dumps({
            "step_s": seconds, "steps_per_s": 1 / seconds, "samples_per_s": batch_size / seconds,
            "allreduce_ms": allreduce_ms,
            "parameters": sum(p.numel() for p in net.parameters())}))
    ranks.leave()


def _timed(supernet: str, *, ranks: int, threads: int, batch_size: int,
           sync: str = "ddp") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        args = [__file__, "--worker", supernet, str(batch_size), sync, str(result)]
        command = ([*TORCHRUN, "--standalone", f"--nproc-per-node={ranks}", *args]
                   if ranks > 1 else [sys.executable, *args])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TORCH_CPP_LOG_LEVEL="ERROR")
        subprocess.run(command, env=env, check=True, capture_output=True)
        figures = json.loads(result.read_text())
    sync = sync if ranks > 1 else "one rank"
    print(f"{supernet} {ranks} rank(s) x {threads} thread(s), batch {batch_size}, {sync}: "
          f"{figures['steps_per_s']:.2f} steps/s")
    return {"ranks": ranks, "threads_per_rank": threads, "batch_size": batch_size,
            "sync": sync, **figures}


def ranks_and_threads(supernet: str) -> dict[str, Any]:
    """Every configuration ``REPEATS`` times, round robin (the machine's load drifts);
    the median step time of each."""
    batch = zoo_recipe(supernet).batch_size
    configs = {
        "1 rank x 1 thread, half batch": dict(ranks=1, threads=1, batch_size=batch // 2),
        "1 rank x 1 thread": dict(ranks=1, threads=1, batch_size=batch),
        "1 rank x 2 threads": dict(ranks=1, threads=2, batch_size=batch),
        "2 ranks x 1 thread (DDP)": dict(ranks=2, threads=1, batch_size=batch),
        "2 ranks x 1 thread (flat all-reduce)": dict(ranks=2, threads=1, batch_size=batch,
                                                     sync="flat"),
        "2 ranks x 1 thread (no gradient all-reduce)": dict(ranks=2, threads=1,
                                                            batch_size=batch, sync="none"),
    }
    repeats: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for _ in range(REPEATS):
        for name, options in configs.items():
            repeats[name].append(_timed(supernet, **options))
    runs = {}
    for name, timed in repeats.items():
        median = statistics.median(t["step_s"] for t in timed)
        runs[name] = timed[0] | {"step_s": median, "steps_per_s": 1 / median,
                                 "samples_per_s": timed[0]["batch_size"] / median,
                                 "step_s_repeats": [t["step_s"] for t in timed]}
    step = {name: run["step_s"] for name, run in runs.items()}
    alone = step["2 ranks x 1 thread (no gradient all-reduce)"]
    ddp = step["2 ranks x 1 thread (DDP)"]
    return {
        "runs": runs,
        "speedup_2_ranks_vs_1_rank_2_threads": step["1 rank x 2 threads"] / ddp,
        "speedup_2_ranks_vs_1_rank_1_thread": step["1 rank x 1 thread"] / ddp,
        "ddp_overhead_ms_per_step": (ddp - alone) * 1e3,
        "flat_overhead_ms_per_step":
            (step["2 ranks x 1 thread (flat all-reduce)"] - alone) * 1e3,
        "contention_ms_per_step": (alone - step["1 rank x 1 thread, half batch"]) * 1e3,
        "allreduce_ms": runs["2 ranks x 1 thread (DDP)"]["allreduce_ms"],
    }


def resuming() -> dict[str, Any]:
    """Read the newest state of a HAT run; replay 1,000 and 10,000 steps of keys."""
    recipe = zoo_recipe("hat")
    task = get_task(recipe.task)
    torch.manual_seed(0)
    net = recipe.build(task)
    with tempfile.TemporaryDirectory() as folder:
        run = RunFolder.create(Path(folder) / "run", settings={}, out="", command=None,
                               force=False)
        train_supernet(net, task, steps=2, batch_size=recipe.batch_size, lr=recipe.lr, seed=0,
                       progress=False, eval_limit=1, checkpointing=Checkpointing(run, 1))
        state_mb = sum(p.stat().st_size for p in run._steps()[-1].iterdir()) / 1e6
        started = time.perf_counter()
        run.latest()
        read_s = time.perf_counter() - started
    replay = {}
    for steps in (1_000, 10_000):
        batches = StepBatches(task, batch_size=recipe.batch_size, seed=0)
        started = time.perf_counter()
        batches.skip(steps)
        replay[str(steps)] = (time.perf_counter() - started) / steps * 1e3
    print(f"resume: read {read_s:.3f} s ({state_mb:.1f} MB), replay {replay} s per 1,000 steps")
    return {"state_mb": state_mb, "read_state_s": read_s,
            "replay_s_per_1000_steps": replay}


def main() -> None:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "warmup_steps": WARMUP, "timed_steps": STEPS, "cores": os.cpu_count(),
        "supernets": {name: ranks_and_threads(name) for name in SUPERNETS},
        "resume": resuming(),
        "gpu": ("not run: no GPU" if not torch.cuda.is_available()
                else "not run: this benchmark times the CPU; see the closing note"),
    }
    write_results(OUT, result, started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=4, metavar=("SUPERNET", "BATCH", "SYNC", "RESULT"))
    options = parser.parse_args()
    if options.worker:
        name, batch, sync, path = options.worker
        worker(name, int(batch), sync, Path(path))
    else:
        main()
