"""The model zoo: plain (not weight-sharing) models shipped for compression, and their recipes.

A zoo model couples an export family (a dense builder in :data:`nas.SUBNET_BUILDERS`), the
task its weights were trained on, a folder under ``supernets/zoo/`` holding its export
(``model.safetensors`` + ``config.json``, :func:`nas.supernets._export.save_subnet`) and
the :class:`ModelRecipe` that produced it, so that ``load_zoo_model("moe-pydoc")`` loads
trained weights and ``nas train --model moe-pydoc`` reproduces them (same torch version
and thread count). ``NAS_ZOO_DIR`` moves the zoo as for supernets (:func:`zoo_dir`).

Training is plain: one batch per step, the task's loss plus an optional extra term the
model computes in its forward (a mixture of experts' load-balancing loss), AdamW and
warm-up + cosine from :func:`~nas.supernets.training._loop.optimizer_and_schedule`, the
same optimiser and schedule as the supernets.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._files import check_output
from nas._progress import progress_bar
from nas._task import TASKS, Task
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets.mamba.model import FAMILY as MAMBA_FAMILY
from nas.supernets.mamba.model import FULL, MambaLM
from nas.supernets.moe.model import FAMILY as MOE_FAMILY
from nas.supernets.moe.model import MoELM, collect_moe_stats, upcycle
from nas.supernets.tasks._lm import LM_TASK_NAME, VOCAB_SIZE, PydocLMTask
from nas.supernets.training._loop import OPTIMIZER, _validate, optimizer_and_schedule
from nas.supernets.training._zoo import _argv_command, zoo_dir

__all__ = [
    "MODEL_RECIPES",
    "CHECK_WINDOWS",
    "ExtraLoss",
    "ModelRecipe",
    "WarmStart",
    "add_model_recipe",
    "list_zoo_models",
    "load_zoo_model",
    "model_recipe",
    "routing_shares",
    "train_model",
]

logger = logging.getLogger(__name__)

CHECK_WINDOWS = 8
"""Validation windows of the quick ``check`` recorded with every export: cheap enough for
a test to re-evaluate a loaded model and compare."""
CLIP_NORM = 1.0
SCHEDULE = "cosine"


@dataclass(frozen=True)
class ExtraLoss:
    """A term added to the task's loss at every training step: ``weight`` times the
    scalar tensor the model leaves in attribute ``attribute`` after its forward (e.g.
    :attr:`MoELM.aux_loss`, the load-balancing loss)."""

    attribute: str
    weight: float

    def describe(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "weight": self.weight}


@dataclass(frozen=True)
class WarmStart:
    """A first stage trained before the recipe's model and converted into it, e.g. sparse
    upcycling: a dense model whose FFN is then copied into every expert (Mixtral-like
    experts that start alike and are cheaper to train than experts from scratch).

    Attributes:
        method: what the conversion is, recorded with the export.
        build: the first stage's untrained model for the task.
        steps: its optimiser steps (same batch size, rate, schedule as the recipe).
        convert: the recipe's model from the trained first stage (may draw from the RNG).
    """

    method: str
    build: Callable[[Task], nn.Module]
    steps: int
    convert: Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class ModelRecipe:
    """How a shipped plain model is built and trained (the defaults of ``nas train --model``).

    Attributes:
        name: the zoo name (``nas train --model NAME``, :func:`load_zoo_model`).
        stem: the export's folder under :func:`zoo_dir`.
        task: the registered task's name; ``task_options`` its constructor arguments.
        build: an untrained model for the task (called under the recipe's seed).
        family: the export family (its dense builder rebuilds the model).
        steps, batch_size, lr, seed, warmup, weight_decay: the training (AdamW, linear
            warm-up over ``warmup`` steps, then cosine to 0; ``warmup`` ``None`` is
            ``min(1000, steps // 10)`` as for supernets).
        eval_limit: validation windows of the recorded metrics (``None``: all).
        extra_loss: an extra term of the training loss, or ``None``.
        report: figures of the trained model recorded in the export's metadata under
            ``figures`` (e.g. routing shares), or ``None``.
        warm_start: a first stage converted into the model (:class:`WarmStart`), trained
            with ``seed``; the model's own stage then uses ``seed + 1`` (fresh batches).
    """

    name: str
    stem: str
    task: str
    build: Callable[[Task], nn.Module]
    family: str
    steps: int
    batch_size: int
    lr: float
    seed: int
    warmup: int | None = None
    weight_decay: float = 0.01
    eval_limit: int | None = None
    extra_loss: ExtraLoss | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)
    report: Callable[[nn.Module, Task], dict[str, Any]] | None = None
    warm_start: WarmStart | None = None

    def make_task(self) -> Task:
        """The recipe's task, built with ``task_options``."""
        return TASKS.create(self.task, **dict(self.task_options))


MODEL_RECIPES: dict[str, ModelRecipe] = {}
"""Zoo models by name; the figures are the shipped export's recipe."""


def add_model_recipe(recipe: ModelRecipe) -> ModelRecipe:
    """Make ``recipe`` a zoo model (what ``nas train --model NAME`` reproduces).

    Raises:
        ValueError: a model of that name exists already.
    """
    if recipe.name in MODEL_RECIPES:
        raise ValueError(f"zoo model {recipe.name!r} is defined twice")
    MODEL_RECIPES[recipe.name] = recipe
    return recipe


def list_zoo_models() -> list[str]:
    """The names of the zoo's plain models, sorted."""
    return sorted(MODEL_RECIPES)


def model_recipe(name: str) -> ModelRecipe:
    """The recipe of zoo model ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in MODEL_RECIPES:
        raise ValueError(f"model must be one of {list_zoo_models()}, got {name!r}")
    return MODEL_RECIPES[name]


def load_zoo_model(name: str) -> nn.Module:
    """The shipped model ``name`` (from ``zoo_dir()/<stem>/``), in eval mode.

    Raises:
        ValueError: an unknown name, or an export that does not load.
        FileNotFoundError: the export is missing.
    """
    return load_subnet(zoo_dir() / model_recipe(name).stem)


# -- training ----------------------------------------------------------------------------


def train_model(
    name: str,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train zoo model ``name`` from scratch and export it into the folder ``out``.

    Options left ``None`` take the recipe's values, so ``train_model("moe-pydoc")``
    reproduces the shipped weights (on the same torch version and thread count).

    Args:
        name: the zoo model (:func:`list_zoo_models`).
        steps: override the recipe's steps (those of the model's own stage; a warm start
            keeps its recipe's steps).
        batch_size: override the recipe's batch size.
        lr: override the recipe's learning rate.
        seed: override the recipe's seed.
        out: the export folder; ``zoo_dir()/<stem>`` when omitted.
        progress: show a progress bar.
        command: the command line to record; the current ``sys.argv`` when omitted.
        overwrite: write into an existing, non-empty ``out`` (checked before training).

    Returns:
        The export's metadata (recipe, task, metrics, figures) plus ``"path"`` (the folder).

    Raises:
        ValueError: an unknown name or invalid training options.
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    recipe = model_recipe(name)
    target = zoo_dir() / recipe.stem if out is None else Path(out)
    check_output(target, kind="dir", force=overwrite)  # before the training, not after it
    settings = {
        "steps": recipe.steps if steps is None else steps,
        "batch_size": recipe.batch_size if batch_size is None else batch_size,
        "lr": recipe.lr if lr is None else lr,
        "seed": recipe.seed if seed is None else seed,
    }
    warmup = min(1000, settings["steps"] // 10) if recipe.warmup is None else recipe.warmup
    _validate(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
              random_subnets=0, warmup=warmup, schedule=SCHEDULE)
    task = recipe.make_task()
    stages: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, caller's RNG untouched
        torch.manual_seed(settings["seed"])
        if recipe.warm_start is None:
            model = recipe.build(task)
        else:
            model, stages["warm_start"] = _warm_start(recipe, task, settings, progress)
            settings["seed"] += 1
        trained = fit(model, task, **settings, warmup=warmup,
                      weight_decay=recipe.weight_decay, extra_loss=recipe.extra_loss,
                      progress=progress)
    metadata = {
        "zoo_model": recipe.name,
        "task": task.name,
        "task_options": dict(recipe.task_options),
        "command": command if command is not None else _argv_command(),
        "recipe": {"name": recipe.name, "stem": recipe.stem, "family": recipe.family,
                   **trained, "eval_limit": recipe.eval_limit, **stages},
        "metrics": evaluate_model(model, task, limit=recipe.eval_limit),
    }
    if recipe.report is not None:
        metadata["figures"] = recipe.report(model, task)
    check_output(target, kind="dir", force=overwrite)  # one may have appeared meanwhile
    save_subnet(model, target, family=recipe.family, metadata=metadata, overwrite=True)
    logger.info("wrote %s (%.2f MB)", target, (target / "model.safetensors").stat().st_size / 1e6)
    return metadata | {"path": str(target)}


def _warm_start(recipe: ModelRecipe, task: Task, settings: dict[str, Any],
                progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """Train the recipe's first stage and convert it; the model and the stage's record."""
    stage = recipe.warm_start
    assert stage is not None
    first = stage.build(task)
    trained = fit(first, task, steps=stage.steps, batch_size=settings["batch_size"],
                  lr=settings["lr"], seed=settings["seed"], warmup=min(1000, stage.steps // 10),
                  weight_decay=recipe.weight_decay, progress=progress)
    return stage.convert(first), {"method": stage.method, **trained}


def fit(
    model: nn.Module,
    task: Task,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup: int,
    weight_decay: float = 0.01,
    extra_loss: ExtraLoss | None = None,
    clip_norm: float = CLIP_NORM,
    progress: bool = True,
    log_every: int = 100,
) -> dict[str, Any]:
    """Train ``model`` on ``task`` in place (left in eval mode); deterministic given ``seed``.

    Each step draws one batch (``task.train_batches``), backpropagates the task's loss
    plus ``extra_loss``, clips the gradient norm and takes one AdamW step; the learning
    rate warms up over ``warmup`` steps, then follows a cosine to 0.

    Returns:
        The recipe as run: every argument, the optimiser, the parameter count, the final
        running losses, torch version, thread count, date and wall time.
    """
    if extra_loss is not None and not extra_loss.weight >= 0:
        raise ValueError(f"extra_loss.weight must be >= 0, got {extra_loss.weight!r}")
    started = time.perf_counter()
    torch.manual_seed(seed)  # dropout, if any
    next_batch = task.train_batches(
        batch_size=batch_size, generator=torch.Generator().manual_seed(seed))
    optimizer, scheduler = optimizer_and_schedule(
        model.parameters(), lr=lr, weight_decay=weight_decay, schedule=SCHEDULE,
        warmup=warmup, steps=steps)
    model.train()
    running, running_extra = math.nan, math.nan
    bar = progress_bar(range(1, steps + 1), desc="training", disable=not progress, unit="step")
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, next_batch())
        total = loss
        if extra_loss is not None:
            extra = getattr(model, extra_loss.attribute)
            total = loss + extra_loss.weight * extra
            running_extra = _smooth(running_extra, float(extra.detach()))
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        scheduler.step()
        running = _smooth(running, float(loss.detach()))
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                        refresh=False)
        if log_every and step % log_every == 0:
            logger.info("step %d/%d loss %.4f", step, steps, running)
    bar.close()
    model.eval()
    return {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "warmup": warmup,
        "schedule": SCHEDULE,
        "optimizer": OPTIMIZER,
        "weight_decay": weight_decay,
        "clip_norm": clip_norm,
        "extra_loss": None if extra_loss is None else extra_loss.describe(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": running,
        "final_extra_loss": None if extra_loss is None else running_extra,
        "task": task.name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def evaluate_model(model: nn.Module, task: Task, *, limit: int | None) -> dict[str, Any]:
    """Validation metrics on ``limit`` examples (all when ``None``), plus the quick
    ``check`` on the first :data:`CHECK_WINDOWS`."""
    return task.evaluate(model, split="validation", limit=limit) | {
        "limit": limit,
        "check": task.evaluate(model, split="validation", limit=CHECK_WINDOWS)
        | {"limit": CHECK_WINDOWS},
    }


def _smooth(running: float, value: float) -> float:
    return value if math.isnan(running) else 0.98 * running + 0.02 * value


# -- the shipped models ------------------------------------------------------------------

CONTEXT = 256
"""Bytes per window of both shipped language models."""
MOE_ARCHITECTURE = {"vocab_size": VOCAB_SIZE, "d_model": 64, "n_heads": 4, "n_layers": 4,
                    "ffn_dim": 96, "n_experts": 8, "top_k": 2}
MAMBA_ARCHITECTURE = {"vocab_size": VOCAB_SIZE, "d_model": 128, "d_state": 16, "d_conv": 4,
                      "expand": 2, "headdim": 32, "ngroups": 1, "chunk_size": 32}
MAMBA_BLOCKS = 6
MOE_BALANCE_WEIGHT = 0.05
"""The MoE's load-balancing weight: our ``aux_loss`` is HF Mixtral's divided by top_k (2),
so 0.05 is 0.025 on HF's scale, next to Mixtral's 0.02 (the README's Sub-MoE figures say
how 0.04 compares)."""


def _lm_task(task: Task, name: str) -> PydocLMTask:
    if not isinstance(task, PydocLMTask):
        raise TypeError(f"the {name} zoo model needs a PydocLMTask, got {type(task).__name__}")
    return task


def _build_moe(task: Task) -> nn.Module:
    """An untrained Mixtral-style MoE of the shipped size, its context that of ``task``."""
    return MoELM(**MOE_ARCHITECTURE, context=_lm_task(task, "moe-pydoc").context)


def _build_dense_moe(task: Task) -> nn.Module:
    """The MoE's dense twin (one expert per layer, top-1): the upcycling's first stage."""
    return MoELM(**MOE_ARCHITECTURE | {"n_experts": 1, "top_k": 1},
                 context=_lm_task(task, "moe-pydoc").context)


def _upcycle_moe(dense: nn.Module) -> nn.Module:
    assert isinstance(dense, MoELM)
    return upcycle(dense, n_experts=MOE_ARCHITECTURE["n_experts"],
                   top_k=MOE_ARCHITECTURE["top_k"])


def _build_mamba(task: Task) -> nn.Module:
    """An untrained Mamba-2 of the shipped size (no positions: any context)."""
    _lm_task(task, "mamba-pydoc")
    return MambaLM(blocks=[FULL] * MAMBA_BLOCKS, **MAMBA_ARCHITECTURE)


def routing_shares(model: nn.Module, task: Task, *, limit: int | None = None) -> dict[str, Any]:
    """Per MoE layer, each expert's share of the top-k assignments on the validation
    windows (shares sum to 1; ``1 / experts`` each is perfectly balanced)."""
    if not isinstance(model, MoELM) or not isinstance(task, PydocLMTask):
        raise TypeError("routing_shares needs an MoELM and a PydocLMTask, got "
                        f"{type(model).__name__} and {type(task).__name__}")
    inputs, _ = task.windows("validation", limit=limit)
    stats = collect_moe_stats(model, inputs, max_tokens=1)
    shares = []
    for moe, layer in zip(model.moe_layers, stats):
        counts = layer.expert_counts(moe.router_map.tolist()).double()
        shares.append([round(float(c), 4) for c in counts / counts.sum()])
    return {"routing_shares": shares, "routing_windows": len(inputs)}


def _moe_report(model: nn.Module, task: Task) -> dict[str, Any]:
    return routing_shares(model, task)


add_model_recipe(ModelRecipe(
    name="moe-pydoc",
    stem="moe-pydoc",
    task=LM_TASK_NAME,
    task_options={"context": CONTEXT},
    build=_build_moe,
    family=MOE_FAMILY,
    steps=1500,
    batch_size=16,
    lr=3e-3,
    seed=0,
    warmup=100,
    extra_loss=ExtraLoss("aux_loss", MOE_BALANCE_WEIGHT),
    report=_moe_report,
    warm_start=WarmStart("sparse upcycling (Komatsuzaki et al., 2023): the dense twin's "
                         "FFN copied into every expert, fresh routers",
                         build=_build_dense_moe, steps=500, convert=_upcycle_moe),
))

add_model_recipe(ModelRecipe(
    name="mamba-pydoc",
    stem="mamba-pydoc",
    task=LM_TASK_NAME,
    task_options={"context": CONTEXT},
    build=_build_mamba,
    family=MAMBA_FAMILY,
    steps=600,
    batch_size=16,
    lr=3e-3,
    seed=0,
    warmup=60,
))
