"""The zoo: shipped supernet checkpoints, how to load them and how they were trained.

A zoo entry couples a supernet family, the task its weights were trained on, a
checkpoint stem under ``supernets/zoo/`` and the recipe that produced it, so that
``nas.get_supernet("hat")`` loads trained weights and ``nas train --supernet hat``
reproduces them. Set ``NAS_ZOO_DIR`` to load checkpoints from another folder (a
retrained zoo) without touching the installed package.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas._files import check_output, check_outputs
from nas._supernet import SUPERNETS, Supernet
from nas._task import Task, get_task
from nas.supernets.hat import HATSuperTransformer
from nas.supernets.hat._space import G2P_SPACE
from nas.supernets.tasks._g2p import PAD, G2PTask
from nas.supernets.training._distributed import Ranks
from nas.supernets.training._loop import (
    SUPERNET_FAMILIES,
    Checkpointing,
    Execution,
    load_checkpoint,
    save_checkpoint,
    train_supernet,
)
from nas.supernets.training._schemes import TrainingScheme
from nas.supernets.training._state import RunFolder

logger = logging.getLogger(__name__)

ZOO_DIR_ENV = "NAS_ZOO_DIR"

# The HAT family rebuilds from its architecture dict (what checkpoints record).
SUPERNET_FAMILIES.register("hat", description="HAT SuperTransformer")(
    HATSuperTransformer.from_architecture
)


@dataclass(frozen=True)
class ZooRecipe:
    """How a shipped checkpoint is built and trained (the defaults of ``nas train``).

    ``eval_limit`` bounds the validation examples of the final metrics and of the
    float16 check (``None``: the whole validation split).
    """

    name: str
    stem: str
    task: str
    build: Callable[[Task], Supernet]
    steps: int
    batch_size: int
    lr: float
    seed: int
    random_subnets: int = 2
    warmup: int | None = None
    eval_limit: int | None = None
    scheme: Callable[[], TrainingScheme] | None = None
    """Builds the training scheme; ``None`` is the sandwich rule with ``random_subnets``."""
    weight_decay: float = 0.01
    user_task: Callable[[Path], Task] | None = None
    """Builds the recipe's task on a user's file or folder (``nas train --data PATH``);
    ``None``: the recipe trains on its built-in task only."""


def _build_hat_g2p(task: Task) -> Supernet:
    """An untrained SuperTransformer sized for the grapheme-to-phoneme task."""
    if not isinstance(task, G2PTask):
        raise TypeError(f"the hat zoo entry needs a G2PTask, got {type(task).__name__}")
    return HATSuperTransformer(
        G2P_SPACE,
        src_vocab=task.src_vocab_size,
        tgt_vocab=task.tgt_vocab_size,
        max_positions=64,
        dropout=0.1,
        pad_index=PAD,
    )


ZOO_RECIPES: dict[str, ZooRecipe] = {
    "hat": ZooRecipe(
        name="hat",
        stem="hat-g2p",
        task="g2p-cmudict",
        build=_build_hat_g2p,
        steps=2000,
        batch_size=128,
        lr=3e-3,
        seed=0,
        random_subnets=2,
        warmup=200,
        user_task=lambda path: G2PTask.from_file(path, max_length=64),  # max_positions
    ),
}
"""Zoo entries by supernet name; the figures are the shipped checkpoint's recipe.
Families outside this module add theirs with :func:`add_recipe`."""


def add_recipe(recipe: ZooRecipe) -> ZooRecipe:
    """Make ``recipe`` a zoo entry (what ``nas train --supernet NAME`` reproduces).

    Raises:
        ValueError: an entry of that name exists already.
    """
    if recipe.name in ZOO_RECIPES:
        raise ValueError(f"zoo entry {recipe.name!r} is defined twice")
    ZOO_RECIPES[recipe.name] = recipe
    return recipe


def load_zoo_checkpoint(name: str) -> Supernet:
    """The shipped checkpoint of zoo entry ``name`` (from :func:`zoo_dir`), in eval mode."""
    return load_checkpoint(zoo_dir() / zoo_recipe(name).stem)


def zoo_dir() -> Path:
    """The folder of shipped checkpoints: ``$NAS_ZOO_DIR`` if set, else the package's."""
    override = os.environ.get(ZOO_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[1] / "zoo"


def zoo_recipe(name: str) -> ZooRecipe:
    """The recipe of zoo entry ``name``; ``ValueError`` lists the known names."""
    try:
        return ZOO_RECIPES[name]
    except KeyError:
        raise ValueError(
            f"supernet must be one of {sorted(ZOO_RECIPES)} to train from the zoo, got {name!r}"
        ) from None


@SUPERNETS.register(
    "hat",
    description="HAT SuperTransformer (encoder-decoder) trained on grapheme-to-phoneme "
    "translation of CMUdict (task g2p-cmudict)",
)
def hat() -> Supernet:
    """The shipped HAT SuperTransformer with its trained weights, in eval mode."""
    return load_zoo_checkpoint("hat")


def train_and_save(
    name: str = "hat",
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    out: Path | None = None,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    accumulate: int = 1,
    workers: int = 0,
    save_every: int | None = None,
    data: Path | None = None,
) -> dict[str, Any]:
    """Train zoo entry ``name`` from scratch and write its checkpoint into ``out``.

    Options left ``None`` take the shipped recipe's values, so ``train_and_save("hat")``
    reproduces ``supernets/zoo/hat-g2p`` (on the same torch version and thread count).
    Run under ``torchrun`` it trains on every rank (:class:`~nas.supernets.training.
    _distributed.Ranks`) and rank 0 writes. The training state is saved every
    ``save_every`` steps into the run folder ``<out>.run/`` (:func:`run_folder_of`), from
    which :func:`resume_training` continues a killed run.

    Args:
        name: the zoo entry (``nas.supernets.ZOO_RECIPES``).
        steps: override the recipe's steps.
        batch_size: override the recipe's batch size.
        lr: override the recipe's learning rate.
        seed: override the recipe's seed.
        out: the checkpoint's path stem (``checkpoints/hat-g2p`` writes
            ``checkpoints/hat-g2p.safetensors`` and ``.json``), or an existing folder to
            write ``<folder>/<recipe stem>.*`` into; the zoo folder when omitted.
        progress: show a progress bar.
        command: the command line to record; the current ``sys.argv`` when omitted.
        overwrite: replace an existing checkpoint and run folder at ``out`` (checked
            before training).
        device: where it runs (:class:`Execution`).
        precision: its precision (:class:`Execution`).
        accumulate: batches accumulated per step (:class:`Execution`).
        workers: data-loading workers (:class:`Execution`).
        save_every: steps between saved training states; a tenth of the steps when
            omitted.
        data: the user's training data, read by the recipe's ``user_task`` with the
            built-in data's split rules (:func:`recipe_task`); the built-in task when
            omitted.

    Returns:
        The checkpoint's JSON document plus ``"paths"`` (the two files written); on
        ranks other than 0, the recipe trained (nothing is written).

    Raises:
        ValueError: an unknown name or invalid training options.
        FileExistsError: a checkpoint file or run folder exists at ``out`` and
            ``overwrite`` is false.
    """
    recipe = zoo_recipe(name)
    ranks = Ranks.from_env()
    settings = _settings(recipe, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         device=device, precision=precision, accumulate=accumulate,
                         world_size=ranks.world, save_every=save_every,
                         data=None if data is None else str(Path(data).resolve()))
    task = recipe_task(recipe, data)  # bad data fails before anything is written
    Execution(device=device, precision=precision, accumulate=accumulate, workers=workers,
              ranks=ranks).check(settings["batch_size"])
    stem = check_training_outputs(name, out, force=overwrite)  # before the training
    ranks = ranks.join(device)
    try:
        ranks.barrier()  # every rank checked the outputs before rank 0 writes any
        command = command if command is not None else _argv_command()
        if ranks.leader:
            run = RunFolder.create(run_folder_of(stem), settings=settings, out=str(stem),
                                   command=command, force=overwrite)
        else:
            run = RunFolder(run_folder_of(stem), {"settings": settings, "out": str(stem)})
        return _train(recipe, task, run, ranks, workers=workers, progress=progress,
                      overwrite=overwrite, resume=False)
    finally:
        ranks.leave()


def resume_training(
    run_dir: str | Path, *, workers: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Continue the run saved in ``run_dir`` from its newest good state, with the
    settings it started with, and write its checkpoint: the weights are those of an
    uninterrupted run.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder.
        ValueError: the run's recipe is not this version's, it ran on another number of
            ranks, it saved no readable state, or it finished already.
    """
    run = RunFolder.open(run_dir)
    settings = run.settings
    recipe = zoo_recipe(settings["supernet"])
    current = _settings(recipe, **{k: settings[k] for k in _CHOSEN})
    changed = sorted(k for k in set(settings) | set(current) if settings.get(k) != current.get(k))
    if changed:
        key = changed[0]
        raise ValueError(
            f"run '{run.path}' was started with {key}={settings.get(key)!r}, this version's "
            f"{recipe.name} recipe gives {current.get(key)!r}; resume it with the version "
            "that started it, or start over")
    ranks = Ranks.from_env()
    if ranks.world != settings["world_size"]:
        raise ValueError(f"run '{run.path}' trains on {settings['world_size']} rank(s), this "
                         f"process is one of {ranks.world}; resume it with --nproc "
                         f"{settings['world_size']}")
    stem = Path(run.document["out"])
    existing = [path for path in _checkpoint_files(stem) if path.exists()]
    if existing:
        raise ValueError(f"run '{run.path}' finished already: its checkpoint is "
                         f"'{existing[0]}'")
    task = recipe_task(recipe, None if settings["data"] is None else Path(settings["data"]))
    ranks = ranks.join(settings["device"])
    try:
        return _train(recipe, task, run, ranks, workers=workers, progress=progress,
                      overwrite=False, resume=True)
    finally:
        ranks.leave()


_CHOSEN = ("steps", "batch_size", "lr", "seed", "device", "precision",
           "accumulate", "world_size", "save_every", "data")
"""The settings a user chooses; the others follow from the recipe."""


def _settings(recipe: ZooRecipe, *, steps: int | None, batch_size: int | None,
              lr: float | None, seed: int | None, device: str, precision: str,
              accumulate: int, world_size: int, save_every: int | None,
              data: str | None) -> dict[str, Any]:
    """Everything that decides what a run computes, the recipe's values filled in."""
    steps = recipe.steps if steps is None else steps
    if save_every is not None and (isinstance(save_every, bool) or save_every < 1):
        raise ValueError(f"save_every must be a positive number of steps, got {save_every!r}")
    scheme = recipe.scheme() if recipe.scheme is not None else None
    return {
        "supernet": recipe.name,
        "task": recipe.task,
        "data": data,
        "steps": steps,
        "batch_size": recipe.batch_size if batch_size is None else batch_size,
        "lr": recipe.lr if lr is None else lr,
        "seed": recipe.seed if seed is None else seed,
        "random_subnets": recipe.random_subnets,
        "warmup": recipe.warmup,
        "weight_decay": recipe.weight_decay,
        "eval_limit": recipe.eval_limit,
        "scheme": scheme.describe() if scheme is not None else None,
        "device": device,
        "precision": precision,
        "accumulate": accumulate,
        "world_size": world_size,
        "save_every": max(1, steps // 10) if save_every is None else save_every,
    }


def _train(recipe: ZooRecipe, task: Task, run: RunFolder, ranks: Ranks, *, workers: int,
           progress: bool, overwrite: bool, resume: bool) -> dict[str, Any]:
    """Build, train (resuming from ``run`` if ``resume``) and, on rank 0, save."""
    settings = run.settings
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, caller's RNG untouched
        torch.manual_seed(settings["seed"])
        supernet = recipe.build(task)
    execution = Execution(device=settings["device"], precision=settings["precision"],
                          accumulate=settings["accumulate"], workers=workers, ranks=ranks)
    trained = train_supernet(
        supernet,
        task,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=settings["seed"],
        random_subnets=recipe.random_subnets,
        warmup=recipe.warmup,
        weight_decay=recipe.weight_decay,
        scheme=recipe.scheme() if recipe.scheme is not None else None,
        progress=progress,
        eval_limit=recipe.eval_limit,
        execution=execution,
        checkpointing=Checkpointing(run, settings["save_every"], resume=resume),
    )
    if not ranks.leader:
        return trained
    stem = Path(run.document["out"])
    files = _checkpoint_files(stem)
    check_outputs(files, force=overwrite)  # one may have appeared while it trained
    document = save_checkpoint(
        supernet,
        stem,
        trained,
        task=task,
        eval_limit=recipe.eval_limit,
        command=run.document.get("command"),
    )
    return document | {"paths": [str(path) for path in files], "run": str(run.path)}


def check_training_outputs(name: str, out: Path | None, *, force: bool) -> Path:
    """The checkpoint stem a training of zoo entry ``name`` writes to (see
    :func:`train_and_save`), its folder created, after checking that neither its files
    nor its run folder exist (unless ``force``)."""
    stem = _stem(out, zoo_recipe(name))
    stem.parent.mkdir(parents=True, exist_ok=True)
    check_outputs(_checkpoint_files(stem), force=force)
    check_output(run_folder_of(stem), kind="dir", force=force)
    return stem


def run_folder_of(stem: Path) -> Path:
    """The run folder of the checkpoint ``stem``: ``<stem>.run`` beside it."""
    return stem.with_name(stem.name + ".run")


def _checkpoint_files(stem: Path) -> tuple[Path, Path]:
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _stem(out: Path | None, recipe: ZooRecipe) -> Path:
    """``out`` as a path stem: a folder gets the recipe's stem, a suffix is dropped."""
    if out is None:
        return zoo_dir() / recipe.stem
    out = Path(out)
    if out.is_dir():
        return out / recipe.stem
    return out.with_suffix("") if out.suffix in (".json", ".safetensors") else out


def _argv_command() -> str:
    """The running command line (program name without its folder), prefixed by the
    thread-count variables that change the floating-point results when set."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    env = [
        f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
    ]
    return shlex.join([*env, *argv]) if env else shlex.join(argv)


def recipe_task(recipe: ZooRecipe, data: Path | None) -> Task:
    """The task ``recipe`` trains on: its built-in task, or the user's ``data``.

    Raises:
        ValueError: ``data`` does not exist, or the recipe cannot read a user's data
            (:func:`check_data`), or the data is not in the recipe's format.
    """
    if data is None:
        return get_task(recipe.task)
    check_data(recipe, data)
    assert recipe.user_task is not None
    return recipe.user_task(Path(data))


def check_data(recipe: ZooRecipe, data: Path) -> None:
    """Raise ValueError unless ``recipe`` reads users' data and ``data`` exists."""
    if recipe.user_task is None:
        raise ValueError(f"supernet {recipe.name!r} trains only on its built-in task "
                         f"{recipe.task!r}; leave out --data")
    if not Path(data).exists():
        raise ValueError(f"--data {str(data)!r} does not exist; give a file or folder of "
                         f"training data for {recipe.name!r}")
