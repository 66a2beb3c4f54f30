"""``nas train``: train a supernet of the zoo with the sandwich rule."""

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


@user_errors
def train(
    supernet: str = typer.Option("hat", "--supernet", help="Zoo supernet to train."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimiser steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Examples per batch."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of sampling and initialisation."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Checkpoint path stem (.safetensors/.json); checkpoints/<zoo stem> by default.",
    ),
    force: bool = force_option("Replace an existing checkpoint at OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train SUPERNET from scratch on its built-in task and save a checkpoint.

    Options left out take the values of the recipe that produced the shipped checkpoint
    (recorded in its JSON), so the bare command reproduces it.
    """
    from nas.supernets import train_and_save
    from nas.supernets.training._zoo import zoo_recipe

    configure_logging(verbose)
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
