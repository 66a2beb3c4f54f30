"""``nas train``: train a supernet of the zoo with the sandwich rule, or a plain zoo model."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._common import (
    JSON_HELP,
    configure_logging,
    console,
    force_option,
    print_json,
    user_errors,
)

DEFAULT_SUPERNET = "hat"


@user_errors
def train(
    context: typer.Context,
    supernet: str | None = typer.Option(
        None, "--supernet", help=f"Zoo supernet to train ({DEFAULT_SUPERNET} by default)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Plain zoo model to train instead (moe-pydoc, mamba-pydoc)."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimiser steps."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Examples per step, all ranks and micro-batches "
        "together."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of sampling and initialisation."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Supernet: checkpoint path stem (.safetensors/.json), checkpoints/<zoo stem> by "
        "default; model: export folder, checkpoints/<zoo stem>/ by default.",
    ),
    nproc: int | None = typer.Option(
        None, "--nproc", min=1, help="Train on this many data-parallel ranks of this machine "
        "(launches torchrun; one per GPU, or CPU cores shared among them)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 (autocast; CPU or GPU) or fp16 (autocast and "
        "a grad scaler; GPU)."),
    accumulate: int = typer.Option(
        1, "--accumulate", min=1, help="Micro-batches per rank and step (gradient "
        "accumulation: a global batch larger than memory)."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Worker processes loading batches (0: the training "
        "process loads them)."),
    save_every: int | None = typer.Option(
        None, "--save-every", min=1, help="Steps between saved training states in "
        "<out>.run/ (a tenth of the steps by default)."),
    data: Path | None = typer.Option(
        None, "--data", help="Train on your own data, split like the built-in data: a "
        "CMUdict-format file (hat), a folder of class folders of images (ofa, sortednet), a "
        ".txt file or folder of them (matformer), a CSV of sentences (flexibert)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the killed run in this folder (<out>.run) with its "
        "own settings."),
    force: bool = force_option("Replace an existing checkpoint and run folder at OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train SUPERNET (or MODEL) from scratch on its built-in task (or --data) and save it.

    Options left out take the values of the recipe that produced the shipped checkpoint
    (recorded in its JSON), so the bare command reproduces it. The training state is
    saved in <out>.run/ as it goes: --resume continues a killed run exactly.
    """
    if model is not None and supernet is not None:
        raise ValueError("--model and --supernet are mutually exclusive; give one of them")
    configure_logging(verbose)
    if model is not None:
        given = _given(context, "nproc", "resume", "save_every", "data", "device",
                       "precision", "accumulate", "workers")
        if given:
            raise ValueError(f"plain models train in one fp32 process on the CPU; drop {given[0]}")
        _train_model(model, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
                     force=force, json_output=json_output)
        return
    if resume is not None:
        given = _given(context, "supernet", "steps", "batch_size", "lr", "seed", "out",
                       "save_every", "data", "device", "precision", "accumulate", "force")
        if given:
            raise ValueError(f"--resume continues a run with its own settings; drop {given[0]}")
    from nas.supernets import resume_training, train_and_save
    from nas.supernets.training._zoo import check_data, check_training_outputs, zoo_recipe

    supernet = DEFAULT_SUPERNET if supernet is None else supernet
    if resume is None and out is None:
        out = Path("checkpoints") / zoo_recipe(supernet).stem
    if resume is None:  # before launching ranks
        check_training_outputs(supernet, out, force=force)
        if data is not None:
            check_data(zoo_recipe(supernet), data)
    if _launch(context, nproc, device, resume):
        return
    if resume is not None:
        summary = resume_training(resume, workers=workers, progress=True)
    else:
        summary = train_and_save(
            supernet, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
            progress=True, overwrite=force, device=device, precision=precision,
            accumulate=accumulate, workers=workers, save_every=save_every, data=data,
        )
    if "paths" not in summary:
        return  # a rank other than 0: it wrote nothing
    if json_output:
        print_json(summary)
    else:
        console.print(f"saved {' and '.join(summary['paths'])}", highlight=False)


def _launch(context: typer.Context, nproc: int | None, device: str,
            resume: Path | None) -> bool:
    """Run this command on ``nproc`` ranks under torchrun (a resumed run on as many
    ranks as it had), unless that is one rank or this process is a rank already.
    Returns whether it launched (the ranks did the work)."""
    import json
    import os
    import subprocess

    from nas.supernets.training._distributed import check_nproc, launch_command

    if "WORLD_SIZE" in os.environ:  # a rank of torchrun
        world = int(os.environ["WORLD_SIZE"])
        if nproc is not None and nproc != world:
            raise ValueError(f"--nproc {nproc} differs from torchrun's {world} ranks; drop "
                             "--nproc under torchrun")
        return False
    if resume is not None:
        from nas.supernets.training._state import RunFolder

        settings = RunFolder.open(resume).settings
        world, device = int(settings["world_size"]), str(settings["device"])
        if nproc is not None and nproc != world:
            raise ValueError(f"run '{resume}' trains on {world} rank(s); resume it with "
                             f"--nproc {world} or without --nproc")
        nproc = world
    if nproc is None or check_nproc(nproc, device) == 1:
        return False
    command, env = launch_command(nproc, _command_without_nproc(context))
    console.print(f"launching {nproc} ranks: {json.dumps(command[3:])}", highlight=False)
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.returncode)
    return True


def _given(context: typer.Context, *names: str) -> list[str]:
    """The options among the parameters ``names`` given a value other than their
    default, as spelled on the command line (in the command's order)."""
    return [param.opts[0] for param in context.command.params
            if param.name in names and param.opts
            and context.params[param.name] != param.default]


def _command_without_nproc(context: typer.Context) -> list[str]:
    """``train`` and the options given to it, ``--nproc`` left out (the ranks must not
    launch again), rebuilt from what was parsed: right however the command was called."""
    args = [context.info_name or "train"]
    for param in context.command.params:
        value = context.params[param.name]
        if param.name == "nproc" or value == param.default or not param.opts:
            continue
        if getattr(param, "is_flag", False):
            args.append(param.opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


def _train_model(name: str, *, steps: int | None, batch_size: int | None, lr: float | None,
                 seed: int | None, out: Path | None, force: bool, json_output: bool) -> None:
    from nas.supernets import model_recipe, train_model

    if out is None:
        out = Path("checkpoints") / model_recipe(name).stem
    summary = train_model(name, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
                          progress=True, overwrite=force)
    if json_output:
        print_json(summary)
    else:
        metrics = summary["metrics"]
        console.print(f"saved {summary['path']} (validation loss {metrics['loss']:.4f} "
                      f"nats/byte, accuracy {metrics['accuracy']:.4f})", highlight=False)
