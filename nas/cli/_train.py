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
    supernet: str | None = typer.Option(
        None, "--supernet", help=f"Zoo supernet to train ({DEFAULT_SUPERNET} by default)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Plain zoo model to train instead (moe-pydoc, mamba-pydoc)."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimiser steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Examples per batch."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of sampling and initialisation."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Supernet: checkpoint path stem (.safetensors/.json), checkpoints/<zoo stem> by "
        "default; model: export folder, checkpoints/<zoo stem>/ by default.",
    ),
    force: bool = force_option("Replace an existing checkpoint at OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train SUPERNET (or MODEL) from scratch on its built-in task and save it.

    Options left out take the values of the recipe that produced the shipped checkpoint
    (recorded in its JSON), so the bare command reproduces it.
    """
    if model is not None and supernet is not None:
        raise ValueError("--model and --supernet are mutually exclusive; give one of them")
    configure_logging(verbose)
    if model is not None:
        _train_model(model, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
                     force=force, json_output=json_output)
        return
    from nas.supernets import train_and_save
    from nas.supernets.training._zoo import zoo_recipe

    supernet = DEFAULT_SUPERNET if supernet is None else supernet
    if out is None:
        out = Path("checkpoints") / zoo_recipe(supernet).stem
        out.parent.mkdir(exist_ok=True)
    summary = train_and_save(
        supernet, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
        progress=True, overwrite=force,
    )
    if json_output:
        print_json(summary)
    else:
        console.print(f"saved {' and '.join(summary['paths'])}", highlight=False)


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
