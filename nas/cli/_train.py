"""``nas train``: train a supernet of the zoo with the sandwich rule."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._common import JSON_HELP, configure_logging, console, print_json, user_errors


@user_errors
def train(
    supernet: str = typer.Option("hat", "--supernet", help="Zoo supernet to train."),
    steps: int = typer.Option(3000, "--steps", min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Words per batch."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and initialisation."),
    out: Path = typer.Option(
        Path("checkpoints/hat-g2p"), "--out", help="Checkpoint path stem (.safetensors/.json)."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train SUPERNET from scratch on its built-in task and save a checkpoint."""
    from nas.supernets import train_and_save

    configure_logging(verbose)
    summary = train_and_save(
        supernet, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=out,
        progress=True,
    )
    if json_output:
        print_json(summary)
    else:
        console.print(f"saved {out}.safetensors and {out}.json", highlight=False)
