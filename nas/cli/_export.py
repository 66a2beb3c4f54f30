"""``nas export``: write one trial's subnet as a standalone checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._common import JSON_HELP, STORAGE_HELP, STUDY_HELP, console, print_json, user_errors


@user_errors
def export(
    study: str = typer.Option(..., "--study", help=STUDY_HELP),
    trial: int = typer.Option(..., "--trial", help="Trial number (see `nas studies show`)."),
    out: Path = typer.Option(..., "--out", help="Directory to write model.safetensors and config.json."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Extract the dense subnet of TRIAL and save it; `nas.load_subnet(OUT)` reloads it."""
    from nas.studies import export_trial

    written = export_trial(study, trial, out, storage=storage, overwrite=overwrite)
    if json_output:
        print_json({"study": study, "trial": trial, "out": str(written)})
    else:
        console.print(f"wrote {written}/model.safetensors and config.json", highlight=False)
