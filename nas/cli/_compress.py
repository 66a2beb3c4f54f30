"""``nas compress``: turn a pretrained encoder into a smaller deployable one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nas.cli._common import JSON_HELP, configure_logging, console, print_json, user_errors

app = typer.Typer(help="Compress a model (pruning, subcloning) into a deployable export.",
                  no_args_is_help=True)

MODEL_HELP = "'minilm' (the pretrained all-MiniLM-L6-v2) or a folder nas compress wrote."
FORCE_HELP = "Replace an export already in OUT."


@app.command("prune")
@user_errors
def prune(
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    target_params: float = typer.Option(
        ..., "--target-params", help="Fraction of the parameters to keep, in (0, 1]."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    count: str = typer.Option(
        "all", "--count", help="Parameters the target counts: all, or encoder (no embeddings)."
    ),
    criterion: str = typer.Option("hessian", "--criterion", help="hessian (NViT) or magnitude."),
    steps: int = typer.Option(4, "--steps", min=1, help="Pruning steps."),
    distil_steps: int = typer.Option(
        30, "--distil-steps", min=0, help="Distillation steps after each pruning step."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of batches and saliency probes."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Global structural pruning with Hessian-aware saliency (NViT), distilling from the
    original after every step; the export loads with nas.load_subnet(OUT)."""
    from nas.compress._jobs import prune_job

    configure_logging(verbose)
    summary = prune_job(model, out, target_params=target_params, count=count,
                        criterion=criterion, steps=steps, distil_steps=distil_steps,
                        seed=seed, overwrite=force)
    _report(summary, json_output)


@app.command("subclone")
@user_errors
def subclone(
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    layers: int = typer.Option(..., "--layers", min=1, help="Blocks of the smaller model."),
    hidden: int = typer.Option(..., "--hidden", min=1, help="Its embedding width."),
    ffn: int | None = typer.Option(
        None, "--ffn", min=1, help="Its FFN width (default: the source's, scaled by width)."
    ),
    heads: int | None = typer.Option(
        None, "--heads", min=1, help="Its heads (default: the source's head width kept)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    distil_steps: int = typer.Option(
        150, "--distil-steps", min=0, help="Distillation steps after subcloning."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the training batches."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Weight subcloning: initialise a smaller encoder from the source (neurons ranked by
    activation, blocks that change the stream least removed, LayerNorms rescaled), then
    distil; the export loads with nas.load_subnet(OUT)."""
    from nas.compress._jobs import subclone_job

    configure_logging(verbose)
    summary = subclone_job(model, out, layers=layers, hidden=hidden, ffn=ffn, heads=heads,
                           distil_steps=distil_steps, seed=seed, overwrite=force)
    _report(summary, json_output)


def _report(summary: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(summary)
        return
    params = summary["params"]
    console.print(
        f"wrote {summary['out']}: {params['compressed']:,} parameters "
        f"({params['fraction']:.1%} of {params['original']:,}), embedding width "
        f"{summary['shape']['embed_dim']}, cosine to the source {summary['cosine_to_source']:.3f}"
        f" on {summary['validation_paragraphs']} validation paragraphs, "
        f"{summary['wall_s']:.0f} s",
        highlight=False,
    )
