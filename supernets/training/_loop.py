"""Training a weight-sharing supernet, and its checkpoints.

One loop for every family: each step draws one batch, trains the subnets a
:class:`~nas.supernets.training._schemes.TrainingScheme` plans for that step on it and takes one
optimiser step on their accumulated gradients. The default scheme is the sandwich rule
(largest + smallest + random subnets); families with their own published scheme
(OFA's progressive shrinking, SortedNet, MatFormer) pass theirs.

Checkpoints are two files: ``<stem>.safetensors`` (weights only: nothing loaded runs
pickled code) and ``<stem>.json`` (the architecture that rebuilds the supernet, the task,
the recipe and the validation metrics of the largest and smallest subnets).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from nas._evaluator import accepts_keyword
from nas._files import atomic_write, file_sha256, write_text_atomic
from nas._limits import check_count, usable_cores
from nas._progress import progress_bar
from nas._space import Config
from nas._supernet import SUPERNET_FAMILIES, Supernet
from nas._task import Task
from nas.supernets.training._batches import MAX_WORKERS, StepBatches
from nas.supernets.training._distributed import Ranks
from nas.supernets.training._schemes import SandwichRule, TrainingRun, TrainingScheme
from nas.supernets.training._state import (
    RunFolder,
    TrainingState,
    read_weights,
    unique_tensors,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCHEDULES = ("cosine", "inverse-sqrt")
BETAS = (0.9, 0.98)
OPTIMIZER = f"AdamW(betas={BETAS})"
"""What every trainer records as its optimiser (:func:`optimizer_and_schedule`)."""
FLOAT16_TOLERANCE = 0.002
"""Weights are stored in float16 when no recorded accuracy moves by more than this
(0.2 points); otherwise in float32."""

CHECK_LIMIT = 500
"""Validation examples of the quick accuracy check recorded with every checkpoint."""

REQUIRED_KEYS = (
    "format_version",
    "family",
    "architecture",
    "task",
    "dtype",
    "weights_sha256",
    "recipe",
    "metrics",
)

StepHook = Callable[[int, list[Config], float], None]
"""``on_step(step, configs, loss)``: called after each optimiser step (step from 1)."""


# -- training ----------------------------------------------------------------------------


PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Execution:
    """How a training runs rather than what it trains: the device, the ranks, the
    precision, the micro-batches per rank and step, and the worker processes loading
    batches. In fp32 the weights it reaches do not depend on it beyond floating-point
    rounding, except through BatchNorm, whose statistics are those of each micro-batch.

    ``bf16`` autocasts the forward passes (CPU and GPU); ``fp16`` autocasts them on a
    GPU and scales the loss (a grad scaler keeps small gradients from flushing to zero).
    """

    device: str = "cpu"
    precision: str = "fp32"
    accumulate: int = 1
    workers: int = 0
    ranks: Ranks = field(default_factory=Ranks)

    def check(self, batch_size: int) -> None:
        """Raises ValueError for a device or precision this machine cannot train with,
        or a batch of ``batch_size`` examples too small to split into every part."""
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; "
                             "use --device cpu")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.precision == "fp16" and self.device != "cuda":
            raise ValueError("fp16 training needs a CUDA device (its grad scaler is a GPU "
                             "one); use --precision bf16 on a CPU")
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or (
                self.accumulate < 1):
            raise ValueError(f"accumulate must be a positive integer, got {self.accumulate!r}")
        check_count(self.workers, name="workers", low=0,
                    high=min(MAX_WORKERS, 4 * usable_cores()),
                    why="worker processes beyond a few per core only compete for it")
        parts = self.ranks.world * self.accumulate
        if batch_size < parts:
            raise ValueError(
                f"batch size {batch_size} cannot be split into {self.ranks.world} rank(s) x "
                f"{self.accumulate} micro-batch(es); use a batch size of at least {parts}")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision,
                "accumulate": self.accumulate, "workers": self.workers,
                **self.ranks.describe()}


@dataclass(frozen=True)
class Checkpointing:
    """Save the training state into ``run`` every ``every`` steps and after the last
    one; ``resume`` continues from the newest state there."""

    run: RunFolder
    every: int
    resume: bool = False


def train_supernet(
    supernet: Supernet,
    task: Task,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    random_subnets: int = 2,
    warmup: int | None = None,
    schedule: str = "cosine",
    weight_decay: float = 0.01,
    clip_norm: float = 1.0,
    progress: bool = True,
    log_every: int = 100,
    on_step: StepHook | None = None,
    eval_limit: int | None = None,
    scheme: TrainingScheme | None = None,
    execution: Execution | None = None,
    checkpointing: Checkpointing | None = None,
) -> dict[str, Any]:
    """Train ``supernet`` on ``task``; deterministic given ``seed``.

    Each step draws one batch, activates the subnets ``scheme`` plans in turn (by
    default the largest, the smallest and ``random_subnets`` random ones), accumulates
    the gradients of their weighted losses, clips the gradient norm and takes one AdamW
    step. The learning rate
    warms up linearly for ``warmup`` steps, then follows ``schedule``: ``"cosine"``
    (down to 0 at ``steps``) or ``"inverse-sqrt"`` (Vaswani et al.).

    On several ranks (``execution.ranks``) every rank draws the same batch keys and
    subnets and trains on its share of the batch; each part's loss is weighted by its
    share of what the batch's loss averages over (:meth:`~nas._task.Task.loss_units`),
    so the all-reduced gradient is the whole batch's, as in one process. The same holds
    for ``execution.accumulate`` micro-batches per rank.

    Args:
        supernet: the supernet, trained in place (left in eval mode, on the CPU).
        task: data and loss; its ``evaluate`` gives the final metrics.
        steps: optimiser steps.
        batch_size: examples per step, all ranks and micro-batches together.
        lr: peak learning rate.
        seed: seeds the batches, the sampled subnets and dropout (rank r: ``seed + r``).
        random_subnets: random subnets per step besides the largest and smallest (the
            default sandwich scheme only).
        warmup: warm-up steps; ``min(1000, steps // 10)`` when omitted.
        schedule: ``"cosine"`` or ``"inverse-sqrt"``.
        weight_decay: AdamW's decoupled weight decay.
        clip_norm: maximal gradient norm.
        progress: show a tqdm bar with the running loss (rank 0 only).
        log_every: log the running loss every this many steps.
        on_step: called as ``on_step(step, configs, loss)`` after every step.
        eval_limit: validate the final largest/smallest subnets on this many examples.
        scheme: which subnets each step trains and with which loss;
            ``SandwichRule(random_subnets)`` when omitted.
        execution: device, ranks, precision, accumulation and loader workers
            (:class:`Execution`; one fp32 process on the CPU when omitted).
        checkpointing: save (and resume) the training state (:class:`Checkpointing`).

    Returns:
        The recipe (every argument above, the scheme's settings, the execution, torch
        version, threads, date, wall time) and ``metrics``: the validation metrics of
        the ``largest`` and ``smallest`` subnets (rank 0; ``{}`` on the other ranks).

    Raises:
        ValueError: a non-positive ``steps``/``batch_size``/``lr``, a negative
            ``random_subnets``, an unknown ``schedule`` or an execution this machine
            cannot run.
    """
    warmup = min(1000, steps // 10) if warmup is None else warmup
    _validate(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        random_subnets=random_subnets,
        warmup=warmup,
        schedule=schedule,
    )
    execution = Execution() if execution is None else execution
    execution.check(batch_size)
    ranks = execution.ranks
    device = ranks.device(execution.device)
    scheme = SandwichRule(random_subnets) if scheme is None else scheme
    started = time.perf_counter()
    torch.manual_seed(seed + ranks.rank)  # dropout
    rng = np.random.default_rng(seed)  # subnets: the same on every rank
    batches = StepBatches(task, batch_size=batch_size, seed=seed, world=ranks.world,
                          rank=ranks.rank, accumulate=execution.accumulate,
                          workers=execution.workers)
    runs = _checked_runs(scheme.runs(steps), steps)
    supernet.to(device)
    optimizer, scheduler = optimizer_and_schedule(
        supernet.parameters(),
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        steps=steps,
        runs=runs,
    )
    scaler = torch.amp.GradScaler("cuda") if execution.precision == "fp16" else None
    restarts = {run.first_step for run in runs[1:]}
    scheme.start(supernet, task, steps=steps)
    trainer = _Trainer(supernet, optimizer, scheduler, scaler, rng, scheme, ranks)
    if checkpointing is not None and checkpointing.resume:
        state = checkpointing.run.latest()
        if state is not None:
            trainer.restore(state)
            batches.skip(trainer.done)
    model = ranks.wrap(supernet)
    supernet.train()
    bar = progress_bar(range(trainer.done + 1, steps + 1), desc=f"{scheme.name} training",
                       disable=not (progress and ranks.leader), unit="step",
                       initial=trainer.done, total=steps)
    for step in bar:
        if step in restarts:
            optimizer.state.clear()  # a new run starts with fresh moments
        planned = scheme.plan(step, steps, supernet, rng)
        parts = [tuple(t.to(device) for t in part) for part in batches.next_step()]
        loss = _accumulate(model, supernet, task, scheme, parts, planned, execution, device,
                           scaler)
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(supernet.parameters(), clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        trainer.after_step(step, loss)
        bar.set_postfix(
            loss=f"{trainer.running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False
        )
        if log_every and step % log_every == 0 and ranks.leader:
            logger.info("step %d/%d loss %.4f lr %.3e", step, steps, trainer.running,
                        scheduler.get_last_lr()[0])
        if checkpointing is not None and (step % checkpointing.every == 0 or step == steps):
            trainer.save(checkpointing.run, wall_s=time.perf_counter() - started)
        if on_step is not None:
            on_step(step, [config for config, _ in planned], loss)
    bar.close()
    wall_s = trainer.wall_s + time.perf_counter() - started
    supernet.to("cpu")
    supernet.eval()
    return {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "scheme": scheme.describe(),
        "warmup": warmup,
        "schedule": schedule,
        "optimizer": OPTIMIZER,
        "weight_decay": weight_decay,
        "clip_norm": clip_norm,
        "final_loss": trainer.running,
        "task": task.name,
        "execution": execution.describe(),
        "resumed_at": trainer.resumed_at,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "metrics": evaluate_extremes(supernet, task, limit=eval_limit) if ranks.leader else {},
    }


class _Trainer:
    """The state a training carries from step to step, saved and restored whole."""

    def __init__(self, supernet: Supernet, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler | None, rng: np.random.Generator,
                 scheme: TrainingScheme, ranks: Ranks) -> None:
        self.supernet, self.optimizer, self.scheduler = supernet, optimizer, scheduler
        self.scaler, self.rng, self.scheme, self.ranks = scaler, rng, scheme, ranks
        self.done = 0
        self.running = math.nan
        self.wall_s = 0.0
        self.resumed_at: list[int] = []

    def after_step(self, step: int, loss: float) -> None:
        self.done = step
        self.running = loss if math.isnan(self.running) else 0.98 * self.running + 0.02 * loss

    def save(self, run: RunFolder, *, wall_s: float) -> None:
        """Gather every rank's generators; rank 0 writes the state."""
        torch_rng = self.ranks.gather(torch.get_rng_state())
        cuda_rng = (self.ranks.gather(torch.cuda.get_rng_state().cuda())
                    if torch.cuda.is_available() and self.ranks.backend == "nccl" else [])
        if not self.ranks.leader:
            return
        scheme_meta, scheme_tensors = self.scheme.state()
        run.save(TrainingState(
            step=self.done,
            weights={k: v.detach().float() if v.is_floating_point() else v.detach()
                     for k, v in self.supernet.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            subnet_rng=self.rng.bit_generator.state,
            torch_rng=torch_rng,
            cuda_rng=[t.cpu() for t in cuda_rng],
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            scheme=scheme_meta,
            scheme_tensors=scheme_tensors,
            running_loss=self.running,
            wall_s=self.wall_s + wall_s,
            resumed_at=self.resumed_at,
        ))

    def restore(self, state: TrainingState) -> None:
        """Continue after ``state.step`` exactly as the run that saved it would have."""
        if len(state.torch_rng) != self.ranks.world:
            raise ValueError(f"the run's state holds {len(state.torch_rng)} rank(s); resume "
                             f"it on as many ranks (--nproc {len(state.torch_rng)})")
        expected = self.supernet.state_dict()
        self.supernet.load_state_dict({k: v.to(expected[k].dtype) for k, v in
                                       state.weights.items()})
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        self.rng.bit_generator.state = state.subnet_rng
        torch.set_rng_state(state.torch_rng[self.ranks.rank])
        if state.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(state.cuda_rng[self.ranks.rank])
        self.scheme.restore(self.supernet, state.scheme, state.scheme_tensors)
        self.done, self.running = state.step, state.running_loss
        self.wall_s = state.wall_s
        self.resumed_at = [*state.resumed_at, state.step]
        logger.info("resumed after step %d", state.step)


def _accumulate(
    model: torch.nn.Module,
    supernet: Supernet,
    task: Task,
    scheme: TrainingScheme,
    parts: Sequence[tuple[torch.Tensor, ...]],
    planned: Sequence[tuple[Config, float]],
    execution: Execution,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
) -> float:
    """Accumulate the gradients of the planned subnets' weighted losses on this rank's
    parts of the batch (all-reduced with the last backward); return the mean
    unweighted loss of the whole batch (the figure the progress bar shows)."""
    supernet.zero_grad(set_to_none=True)
    ranks = execution.ranks
    units = [task.loss_units(part) for part in parts]
    total_units = ranks.total(float(sum(units)), device)
    last = len(planned) * len(parts) - 1
    total = 0.0
    for i, (config, weight) in enumerate(planned):
        supernet.activate(config)
        for j, (part, count) in enumerate(zip(parts, units, strict=True)):
            share = ranks.world * count / total_units  # DDP averages over the ranks
            with ranks.deferred(model, i * len(parts) + j < last):
                with execution.autocast(device):
                    loss = scheme.loss(model, task, part, config)
                scaled = weight * loss * share
                (scaled if scaler is None else scaler.scale(scaled)).backward()
            total += float(loss.detach()) * count
    return ranks.total(total, device) / total_units / len(planned)


def optimizer_and_schedule(
    parameters: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    schedule: str,
    warmup: int,
    steps: int,
    runs: Sequence[TrainingRun] = (TrainingRun(1),),
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser every trainer uses (:data:`OPTIMIZER`) and its learning-rate
    schedule (:func:`_lr_lambda`); step the scheduler once after each optimiser step."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=BETAS, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(schedule, warmup=warmup, steps=steps, runs=runs)
    )
    return optimizer, scheduler


def _lr_lambda(
    schedule: str, *, warmup: int, steps: int, runs: Sequence[TrainingRun] = (TrainingRun(1),)
) -> Callable[[int], float]:
    """The multiplier of the peak learning rate after ``step`` scheduler steps: within
    each run, ``lr_scale`` times a warm-up over ``warmup`` steps (if the run warms up),
    then ``schedule`` from the run's first step to its last."""
    ends = [run.first_step - 1 for run in runs[1:]] + [steps]

    def factor(step: int) -> float:
        step += 1
        index = max(i for i, run in enumerate(runs) if run.first_step <= step)
        run, end = runs[index], ends[index]
        local, length = step - run.first_step + 1, end - run.first_step + 1
        warm = min(warmup, length) if run.warmup else 0
        if local <= warm:
            return run.lr_scale * local / max(warm, 1)
        if schedule == "inverse-sqrt":
            return run.lr_scale * math.sqrt(max(warm, 1) / local)
        progress = (local - warm) / max(length - warm, 1)
        return run.lr_scale * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _checked_runs(runs: Sequence[TrainingRun], steps: int) -> tuple[TrainingRun, ...]:
    """``runs`` if they start at step 1 and at increasing steps within the training."""
    firsts = [run.first_step for run in runs]
    if not firsts or firsts[0] != 1 or firsts != sorted(set(firsts)) or firsts[-1] > steps:
        raise ValueError(
            f"a scheme's runs must start at step 1, then at increasing steps up to {steps}; "
            f"got first steps {firsts}"
        )
    return tuple(runs)


def _validate(
    *, steps: int, batch_size: int, lr: float, random_subnets: int, warmup: int, schedule: str
) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if random_subnets < 0:
        raise ValueError(f"random_subnets must be >= 0, got {random_subnets!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")


def evaluate_extremes(
    supernet: Supernet, task: Task, *, limit: int | None = None
) -> dict[str, dict[str, float]]:
    """Validation metrics of the largest and smallest subnets (the accuracy range)."""
    out = {}
    for name, config in (
        ("largest", supernet.space.largest()),
        ("smallest", supernet.space.smallest()),
    ):
        supernet.activate(config)
        out[name] = task.evaluate(supernet, split="validation", limit=limit)
    supernet.activate(supernet.space.largest())
    return out


# -- checkpoints -------------------------------------------------------------------------


def save_checkpoint(
    supernet: Supernet,
    path_stem: str | Path,
    recipe: Mapping[str, Any],
    *,
    task: Task | None = None,
    dtype: str = "auto",
    eval_limit: int | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; return the JSON written.

    Args:
        supernet: the trained supernet.
        path_stem: the path without suffix; parent folders are created.
        recipe: what :func:`train_supernet` returned (its ``metrics`` are the float32
            figures); stored under ``recipe``.
        task: validates the weights as stored: with ``dtype="auto"`` it checks that
            float16 keeps the largest and smallest subnets' accuracy within 0.2 points,
            and the JSON ``metrics`` (plus a quick ``check`` on
            :data:`CHECK_LIMIT` examples) are those of the stored weights. Without a
            task the JSON keeps the recipe's metrics.
        dtype: ``"auto"``, ``"float16"`` or ``"float32"``. ``"auto"`` without a task
            means float32.
        eval_limit: validation examples of the metrics (all when ``None``).
        command: the command line that produced the checkpoint, recorded as is.

    Raises:
        ValueError: an unknown ``dtype``.
    """
    if dtype not in ("auto", "float16", "float32"):
        raise ValueError(f"dtype must be 'auto', 'float16' or 'float32', got {dtype!r}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors, aliases = unique_tensors(supernet.state_dict())
    if task is None:
        chosen = "float32" if dtype == "auto" else dtype
        metrics: dict[str, Any] = dict(recipe.get("metrics") or {})
    else:
        chosen, metrics = _choose_dtype(supernet, task, dtype, eval_limit)
    weights = stem.with_suffix(".safetensors")
    stored = {
        k: v.detach()
        .to(torch.float16 if chosen == "float16" and v.is_floating_point() else v.dtype)
        .contiguous()
        for k, v in tensors.items()
    }
    # One metadata key: safetensors writes several in a per-process order, which would
    # change the file's sha256 between runs that store identical weights.
    metadata = {"aliases": json.dumps(aliases, sort_keys=True)}
    atomic_write(weights, lambda temp: save_file(stored, str(temp), metadata=metadata))
    document = {
        "format_version": FORMAT_VERSION,
        "family": supernet.family,
        "architecture": supernet.architecture(),
        "task": recipe.get("task", task.name if task is not None else None),
        "dtype": chosen,
        "weights_sha256": file_sha256(weights),
        "weights_bytes": weights.stat().st_size,
        "metrics": metrics,
        "command": command,
        "recipe": dict(recipe),
    }
    write_text_atomic(stem.with_suffix(".json"), json.dumps(document, indent=2) + "\n")
    logger.info("wrote %s (%s, %.1f MB)", weights, chosen, weights.stat().st_size / 1e6)
    return document


def quick_check(supernet: Supernet, task: Task, *, limit: int = CHECK_LIMIT) -> dict[str, float]:
    """Accuracy (no decoding) of both extremes on the first ``limit`` validation
    examples: a figure cheap enough for a test to confirm a loaded checkpoint. Tasks
    whose ``evaluate`` takes ``per`` (sequence tasks) skip their decoding metric."""
    options = {"per": False} if accepts_keyword(task.evaluate, "per") else {}
    out: dict[str, float] = {"limit": limit}
    for name, config in (
        ("largest", supernet.space.largest()),
        ("smallest", supernet.space.smallest()),
    ):
        supernet.activate(config)
        out[f"{name}_accuracy"] = task.evaluate(supernet, limit=limit, **options)["accuracy"]
    supernet.activate(supernet.space.largest())
    return out


def _choose_dtype(
    supernet: Supernet, task: Task, dtype: str, eval_limit: int | None
) -> tuple[str, dict[str, Any]]:
    """The storage dtype and the metrics of the weights as stored.

    ``"auto"`` picks float16 when it keeps both extremes' accuracy within
    :data:`FLOAT16_TOLERANCE` of float32, else float32.
    """
    if dtype != "auto":
        return dtype, _stored_metrics(supernet, task, dtype, eval_limit)
    full = _stored_metrics(supernet, task, "float32", eval_limit)
    half = _stored_metrics(supernet, task, "float16", eval_limit)
    worst = max(abs(half[k]["accuracy"] - full[k]["accuracy"]) for k in ("largest", "smallest"))
    logger.info("float16 weights change accuracy by at most %.4f", worst)
    if worst <= FLOAT16_TOLERANCE:
        return "float16", half | {"float16_accuracy_change": worst}
    return "float32", full | {"float16_accuracy_change": worst}


def _stored_metrics(
    supernet: Supernet, task: Task, dtype: str, eval_limit: int | None
) -> dict[str, Any]:
    """Validation metrics of both extremes and the quick check, weights in ``dtype``."""
    with _rounded(supernet, dtype):
        return evaluate_extremes(supernet, task, limit=eval_limit) | {
            "limit": eval_limit,
            "check": quick_check(supernet, task),
        }


@contextlib.contextmanager
def _rounded(supernet: Supernet, dtype: str) -> Iterator[None]:
    """Round the floating-point weights to ``dtype`` for the block (restored after),
    so that recorded metrics are those of the weights as stored."""
    if dtype == "float32":
        yield
        return
    backup = {k: v.detach().clone() for k, v in supernet.state_dict().items()}
    with torch.no_grad():
        for tensor in supernet.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(getattr(torch, dtype)))
    try:
        yield
    finally:
        supernet.load_state_dict(backup)


def load_checkpoint(path_stem: str | Path) -> Supernet:
    """Rebuild a supernet from ``<stem>.json`` and load ``<stem>.safetensors``.

    Sets ``checkpoint_hash`` (sha256 of the weights file) and ``task_name``; returns
    the supernet in eval mode with its largest subnet active.

    Raises:
        FileNotFoundError: either file is missing.
        ValueError: invalid JSON, missing keys, an unknown family, a weights file that
            is corrupt, does not match the recorded sha256, or whose tensor names or
            shapes do not match the architecture. The message names the file.
    """
    stem = Path(path_stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    meta_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    meta = _read_meta(meta_path)
    state, aliases = read_weights(weights_path)
    digest = file_sha256(weights_path)
    if digest != meta["weights_sha256"]:
        raise ValueError(
            f"{weights_path}: sha256 {digest[:12]}... does not match the "
            f"{str(meta['weights_sha256'])[:12]}... recorded in {meta_path.name}"
        )
    try:
        supernet = SUPERNET_FAMILIES.entry(meta["family"]).factory(meta["architecture"])
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"{meta_path}: cannot build a {meta['family']!r} supernet from its architecture: {err}"
        ) from err
    _check_shapes(supernet, state, aliases, weights_path, meta_path)
    expected = supernet.state_dict()
    full = state | {name: state[target] for name, target in aliases.items()}
    supernet.load_state_dict({k: v.to(expected[k].dtype) for k, v in full.items()})
    supernet.checkpoint_hash = digest
    supernet.task_name = meta["task"]
    supernet.eval()
    supernet.activate(supernet.space.largest())
    return supernet


def read_checkpoint_meta(path_stem: str | Path) -> dict[str, Any]:
    """The validated JSON of a checkpoint (its recipe and recorded metrics)."""
    return _read_meta(Path(path_stem).with_suffix(".json"))


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta['format_version']!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    if meta["family"] not in SUPERNET_FAMILIES:
        raise ValueError(
            f"{path}: unknown supernet family {meta['family']!r}; "
            f"known: {', '.join(SUPERNET_FAMILIES.names()) or 'none'}"
        )
    return meta


def _check_shapes(
    supernet: Supernet,
    state: Mapping[str, torch.Tensor],
    aliases: Mapping[str, str],
    weights_path: Path,
    meta_path: Path,
) -> None:
    expected = {k: tuple(v.shape) for k, v in supernet.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    got |= {name: got[target] for name, target in aliases.items() if target in got}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: tensors do not match the architecture in "
            f"{meta_path.name} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, shape in expected.items():
        if got[name] != shape:
            raise ValueError(
                f"{weights_path}: tensor {name!r} has shape {list(got[name])}, the "
                f"architecture in {meta_path.name} expects {list(shape)}"
            )

